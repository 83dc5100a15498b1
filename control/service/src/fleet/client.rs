//! How control calls a worker's API: HTTPS with control's client certificate, trusting
//! only the local CA, TLS 1.3 with AES-GCM only ([`ember_fleet::tls::client_config`]),
//! over kept-alive connections (a warm invocation pays no handshake).
//!
//! A failed call says whether the invocation may have run: a connection that could not be
//! made, or a worker that refused it before starting (draining), ran nothing and can go to
//! another worker; anything after the request was sent may have run.

use std::time::Duration;

use ember_fleet::messages::{InvokeRequest, InvokeResponse};
use ember_fleet::tls::Identity;
use reqwest::StatusCode;

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
#[derive(Clone, Debug)]
pub struct WorkerClient {
    http: reqwest::Client,
}

impl WorkerClient {
    /// A client trusting `ca_pem` and presenting `identity`.
    pub fn new(ca_pem: &str, identity: &PemPair) -> Result<WorkerClient, String> {
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
        Ok(WorkerClient { http })
    }

    /// Runs `request` on the worker at `address` (`host:port`), waiting up to `timeout`.
    pub async fn invoke(
        &self,
        address: &str,
        request: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeResponse, CallError> {
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let reason = response.text().await.unwrap_or_default();
            return Err(CallError::Unavailable(format!("{status}: {reason}")));
        }
        if !status.is_success() {
            let reason = response.text().await.unwrap_or_default();
            return Err(CallError::Failed(format!("{status}: {reason}")));
        }
        response
            .json()
            .await
            .map_err(|e| CallError::Failed(chain(&e)))
    }
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
