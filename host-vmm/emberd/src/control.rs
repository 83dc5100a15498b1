//! The worker's client for control's fleet listener: HTTPS trusting only control's CA,
//! TLS 1.3 with AES-GCM only ([`ember_fleet::tls::client_config`]), with the worker's
//! certificate once it has one (registration is the only call without).
//!
//! Control is `https://HOST:PORT`; `unix:///PATH`, a Unix socket such as the one a hybrid
//! vsock connection arrives on at control's end (`PATH_PORT` behind `vhost-device-vsock`);
//! or `vsock://CID:PORT`, AF_VSOCK from inside a VM (CID 2 is the host). Over either of
//! the last two the worker checks control's certificate for its vsock name
//! ([`ember_fleet::vsock::CONTROL_NAME`]).

use std::time::Duration;

use bytes::Bytes;
use ember_fleet::messages::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
};
use ember_fleet::tls::{Identity, TlsError};
use ember_fleet::vsock::{VsockAddr, CONTROL_NAME};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::TlsConnector;

/// How long one call to control may take (code downloads excepted).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a code download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call to control failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: control is down or unreachable; worth trying again.
    #[error("control unreachable: {0}")]
    Unreachable(String),
    /// Control answered with an error.
    #[error("control refused ({status}): {message}")]
    Refused { status: StatusCode, message: String },
}

/// Why a client for control could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS for control: {0}")]
    Tls(#[source] TlsError),
    #[error("building the control client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("control address: {0}")]
    Address(String),
}

/// How requests reach control.
enum Transport {
    /// TCP or a Unix socket, by reqwest, which keeps connections alive.
    Http(reqwest::Client),
    /// AF_VSOCK: a connection per call (heartbeats are seconds apart and code is cached).
    Vsock { addr: VsockAddr, tls: TlsConnector },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Http(http) => f.debug_tuple("Http").field(http).finish(),
            Transport::Vsock { addr, .. } => f.debug_tuple("Vsock").field(addr).finish(),
        }
    }
}

/// A client for control's fleet listener at one base URL.
#[derive(Debug)]
pub struct ControlClient {
    transport: Transport,
    base: String,
}

impl ControlClient {
    /// A client for `base` (`https://HOST:PORT`, `unix:///PATH` or `vsock://CID:PORT`)
    /// trusting `ca_pem`, presenting `identity` when given.
    pub fn new(
        base: &str,
        ca_pem: &str,
        identity: Option<&Identity<'_>>,
    ) -> Result<ControlClient, ClientError> {
        let tls = ember_fleet::tls::client_config(ca_pem, identity).map_err(ClientError::Tls)?;
        let by_name = format!("https://{CONTROL_NAME}");
        if base.starts_with("vsock://") {
            let addr = base.parse().map_err(ClientError::Address)?;
            let tls = TlsConnector::from(tls);
            let transport = Transport::Vsock { addr, tls };
            return Ok(ControlClient {
                transport,
                base: by_name,
            });
        }
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(CALL_TIMEOUT)
            .no_proxy();
        let (builder, base) = match base.strip_prefix("unix://") {
            Some(path) => (builder.unix_socket(path), by_name),
            None => (builder, base.trim_end_matches('/').to_owned()),
        };
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(ControlClient {
            transport: Transport::Http(http),
            base,
        })
    }

    pub async fn register(&self, request: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        self.post(ember_fleet::REGISTER, request).await
    }

    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, CallError> {
        self.post(ember_fleet::HEARTBEAT, request).await
    }

    pub async fn deregister(&self) -> Result<(), CallError> {
        let call = Call::new(Method::POST, ember_fleet::DEREGISTER);
        self.send(call).await.map(drop)
    }

    /// The module of `account`'s `artifact_id`, with `grant`.
    pub async fn artifact(
        &self,
        account: &str,
        artifact_id: &str,
        grant: &str,
    ) -> Result<Vec<u8>, CallError> {
        let path = format!("{}/{account}/{artifact_id}", ember_fleet::ARTIFACTS);
        let mut call = Call::new(Method::GET, &path);
        call.grant = Some(grant);
        call.timeout = DOWNLOAD_TIMEOUT;
        Ok(self.send(call).await?.to_vec())
    }

    async fn post<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        let mut call = Call::new(Method::POST, path);
        call.json = Some(serde_json::to_vec(request).expect("messages serialize"));
        let body = self.send(call).await?;
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Unreachable(format!("an answer that is not JSON: {e}")))
    }

    /// Makes `call` and returns the body of a successful answer.
    async fn send(&self, call: Call<'_>) -> Result<Bytes, CallError> {
        let url = format!("{}{}", self.base, call.path);
        let (status, body) = match &self.transport {
            Transport::Http(http) => send_http(http, &url, call).await,
            Transport::Vsock { addr, tls } => {
                let timeout = call.timeout;
                tokio::time::timeout(timeout, send_vsock(*addr, tls, call))
                    .await
                    .map_err(|_| CallError::Unreachable(format!("no answer in {timeout:?}")))?
            }
        }?;
        if status.is_success() {
            return Ok(body);
        }
        Err(refusal(status, &body))
    }
}

/// One request to control.
struct Call<'a> {
    method: Method,
    path: &'a str,
    json: Option<Vec<u8>>,
    grant: Option<&'a str>,
    timeout: Duration,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            json: None,
            grant: None,
            timeout: CALL_TIMEOUT,
        }
    }
}

async fn send_http(
    http: &reqwest::Client,
    url: &str,
    call: Call<'_>,
) -> Result<(StatusCode, Bytes), CallError> {
    let unreachable = |e: reqwest::Error| CallError::Unreachable(causes(&e));
    let mut request = http.request(call.method, url).timeout(call.timeout);
    if let Some(json) = call.json {
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(json);
    }
    if let Some(grant) = call.grant {
        request = request.header(ember_fleet::GRANT_HEADER, grant);
    }
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    Ok((status, response.bytes().await.map_err(unreachable)?))
}

/// `call` on a connection of its own to `addr`, TLS checked for control's vsock name.
async fn send_vsock(
    addr: VsockAddr,
    tls: &TlsConnector,
    call: Call<'_>,
) -> Result<(StatusCode, Bytes), CallError> {
    let unreachable = |e: &dyn std::error::Error| CallError::Unreachable(causes(e));
    let stream = ember_net::vsock::connect(addr.cid, addr.port)
        .await
        .map_err(|e| CallError::Unreachable(format!("vsock://{}:{}: {e}", addr.cid, addr.port)))?;
    let name = ServerName::try_from(CONTROL_NAME).expect("a valid DNS name");
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    // Ends once the sender is dropped, after this one exchange.
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(http::header::HOST, CONTROL_NAME);
    if call.json.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(grant) = call.grant {
        request = request.header(ember_fleet::GRANT_HEADER, grant);
    }
    let request = request
        .body(Full::new(Bytes::from(call.json.unwrap_or_default())))
        .map_err(|e| unreachable(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?;
    Ok((status, body.to_bytes()))
}

/// Control's refusal, with the message of its JSON error body when it has one.
fn refusal(status: StatusCode, body: &[u8]) -> CallError {
    let body = String::from_utf8_lossy(body).into_owned();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    CallError::Refused { status, message }
}

/// `e` and its causes, as the libraries' own messages say little ("error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
