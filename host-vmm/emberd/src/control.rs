//! The worker's client for control's fleet listener: HTTPS trusting only control's CA,
//! TLS 1.3 with AES-GCM only ([`ember_fleet::tls::client_config`]), with the worker's
//! certificate once it has one (registration is the only call without).
//!
//! Control is `https://HOST:PORT`, or `unix:///PATH`: a Unix socket, such as the one a
//! hybrid vsock connection arrives on at control's end (`PATH_PORT` behind
//! `vhost-device-vsock`), over which the worker checks control's certificate for its vsock
//! name ([`ember_fleet::vsock::CONTROL_NAME`]), as it would through AF_VSOCK.

use std::time::Duration;

use ember_fleet::messages::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
};
use ember_fleet::tls::{Identity, TlsError};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one call to control may take (code downloads excepted).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a code download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call to control failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: control is down or unreachable; worth trying again.
    #[error("control unreachable: {}", causes(.0))]
    Unreachable(#[source] reqwest::Error),
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
}

/// A client for control's fleet listener at one base URL.
#[derive(Debug)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
}

impl ControlClient {
    /// A client for `base` (`https://HOST:PORT` or `unix:///PATH`) trusting `ca_pem`,
    /// presenting `identity` when given.
    pub fn new(
        base: &str,
        ca_pem: &str,
        identity: Option<&Identity<'_>>,
    ) -> Result<ControlClient, ClientError> {
        let tls = ember_fleet::tls::client_config(ca_pem, identity).map_err(ClientError::Tls)?;
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(CALL_TIMEOUT)
            .no_proxy();
        let (builder, base) = match base.strip_prefix("unix://") {
            Some(path) => (
                builder.unix_socket(path),
                format!("https://{}", ember_fleet::vsock::CONTROL_NAME),
            ),
            None => (builder, base.trim_end_matches('/').to_owned()),
        };
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(ControlClient { http, base })
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
        let response = self
            .http
            .post(format!("{}{}", self.base, ember_fleet::DEREGISTER))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        checked(response).await.map(drop)
    }

    /// The module of `account`'s `artifact_id`, with `grant`.
    pub async fn artifact(
        &self,
        account: &str,
        artifact_id: &str,
        grant: &str,
    ) -> Result<Vec<u8>, CallError> {
        let response = self
            .http
            .get(format!(
                "{}{}/{account}/{artifact_id}",
                self.base,
                ember_fleet::ARTIFACTS
            ))
            .header(ember_fleet::GRANT_HEADER, grant)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        let bytes = checked(response)
            .await?
            .bytes()
            .await
            .map_err(CallError::Unreachable)?;
        Ok(bytes.to_vec())
    }

    async fn post<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(request)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        checked(response)
            .await?
            .json()
            .await
            .map_err(CallError::Unreachable)
    }
}

/// The response if it is a success, else control's refusal with its message.
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    Err(CallError::Refused { status, message })
}

/// `e` and its causes, as reqwest's own message says little ("error sending request").
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
