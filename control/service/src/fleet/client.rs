//! How control calls a worker's API: HTTPS with control's client certificate, trusting
//! only the local CA, TLS 1.3 with AES-GCM only ([`ember_fleet::tls::client_config`]).
//! Over TCP the connections are kept alive (a warm invocation pays no handshake). A worker
//! in a VM registered over vsock has the address `worker.vsock.ember:PORT`
//! ([`ember_fleet::vsock`]): control reaches it through the VM's hybrid vsock socket
//! (`CONNECT PORT`), with a connection per invocation, and checks its certificate for that
//! name.
//!
//! A failed call says whether the invocation may have run: a connection that could not be
//! made, or a worker that refused it before starting (draining), ran nothing and can go to
//! another worker; anything after the request was sent may have run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use ember_fleet::messages::{InvokeRequest, InvokeResponse};
use ember_fleet::tls::Identity;
use ember_fleet::vsock::WORKER_HOST;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::certs::PemPair;

/// How long a worker may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing ran: no connection, or the worker turned the invocation away.
    #[error("worker unavailable: {0}")]
    Unavailable(String),
    /// The request reached the worker and no valid answer came back.
    #[error("worker failed: {0}")]
    Failed(String),
}

/// Control's client for worker APIs.
#[derive(Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    tls: TlsConnector,
    /// The hybrid vsock socket of the VM whose workers registered over vsock.
    hybrid: Option<Arc<Path>>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("hybrid", &self.hybrid)
            .finish_non_exhaustive()
    }
}

impl WorkerClient {
    /// A client trusting `ca_pem` and presenting `identity`, reaching workers registered
    /// over vsock through the hybrid socket `hybrid`.
    pub fn new(
        ca_pem: &str,
        identity: &PemPair,
        hybrid: Option<PathBuf>,
    ) -> Result<WorkerClient, String> {
        let identity = Identity {
            certificate_pem: &identity.certificate,
            key_pem: &identity.key,
        };
        let tls =
            ember_fleet::tls::client_config(ca_pem, Some(&identity)).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the worker client: {e}"))?;
        Ok(WorkerClient {
            http,
            tls: TlsConnector::from(tls),
            hybrid: hybrid.map(Arc::from),
        })
    }

    /// Runs `request` on the worker at `address` (`host:port`), waiting up to `timeout`.
    pub async fn invoke(
        &self,
        address: &str,
        request: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeResponse, CallError> {
        if let Some(port) = address
            .strip_prefix(WORKER_HOST)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            return self.invoke_hybrid(port, request, timeout).await;
        }
        let url = format!("https://{address}{}", ember_fleet::INVOKE);
        let sent = self
            .http
            .post(url)
            .json(request)
            .timeout(timeout)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Err(CallError::Unavailable(chain(&e))),
            Err(e) => return Err(CallError::Failed(chain(&e))),
        };
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Failed(chain(&e)))?;
        answer(status, &body)
    }

    /// Runs `request` on guest port `port` behind the hybrid vsock socket.
    async fn invoke_hybrid(
        &self,
        port: &str,
        request: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeResponse, CallError> {
        let unavailable = |e: &dyn std::error::Error| CallError::Unavailable(chain(e));
        let Some(uds) = &self.hybrid else {
            return Err(CallError::Unavailable(
                "a worker registered over vsock, and control has no hybrid vsock socket".into(),
            ));
        };
        let port: u32 = port
            .parse()
            .map_err(|_| CallError::Unavailable(format!("invalid vsock port {port:?}")))?;
        let server_name = ServerName::try_from(WORKER_HOST).expect("a valid DNS name");
        let connect = async {
            let stream = ember_net::hybrid_vsock::connect(uds, port).await?;
            self.tls.connect(server_name, stream).await
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| CallError::Unavailable("connecting over vsock timed out".into()))?
            .map_err(|e| unavailable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unavailable(&e))?;
        // Ends once the sender is dropped, after this one exchange.
        tokio::spawn(connection);
        let body = serde_json::to_vec(request).map_err(|e| CallError::Failed(e.to_string()))?;
        let request = http::Request::post(ember_fleet::INVOKE)
            .header(http::header::HOST, WORKER_HOST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Failed("the worker did not answer in time".into()))?
            .map_err(|e| CallError::Failed(chain(&e)))?;
        answer(status, &body)
    }
}

/// The invocation's result from the worker's answer: 503 means it turned the invocation
/// away before running it.
fn answer(status: StatusCode, body: &[u8]) -> Result<InvokeResponse, CallError> {
    let reason = || String::from_utf8_lossy(body).into_owned();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Err(CallError::Unavailable(format!("{status}: {}", reason())));
    }
    if !status.is_success() {
        return Err(CallError::Failed(format!("{status}: {}", reason())));
    }
    serde_json::from_slice(body).map_err(|e| CallError::Failed(e.to_string()))
}

/// An error and its sources on one line: reqwest's own message rarely says what failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
