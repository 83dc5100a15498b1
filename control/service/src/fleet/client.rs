//! How control calls a worker's API: HTTPS with control's client certificate, trusting
//! only the fleet CA, TLS 1.3 with AES-GCM only ([`ember_fleet::tls::client_config`]).
//! Control checks the worker's certificate for the name it gave that worker
//! ([`ember_fleet::tls::worker_name`] of its id), never for the address the worker
//! registered: a worker answering at another's address (or a stranger there) gets no
//! request. Over TCP that name is the URL's host, resolved to the registered address by
//! [`WorkerResolver`], and connections are kept alive (a warm invocation pays no
//! handshake). A worker in a VM registered over vsock has the address
//! `worker.vsock.ember:PORT` ([`ember_fleet::vsock`]): control reaches it through the VM's
//! hybrid vsock socket (`CONNECT PORT`), with a connection per invocation.
//!
//! A failed call says whether the invocation may have run: a connection that could not be
//! made, or a worker that refused it before starting (draining), ran nothing and can go to
//! another worker; anything after the request was sent may have run.

use std::net::SocketAddr;
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
use super::state::Workers;

/// Longest part of a worker's refusal kept (bytes).
const MAX_REASON: usize = 1024;

/// How long a worker may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing ran: no connection, or the worker turned the invocation away.
    #[error("worker unavailable: {0}")]
    Unavailable(String),
    /// Nothing ran: the worker is sound but has no room for the environment (HTTP 429).
    #[error("worker at capacity: {0}")]
    AtCapacity(String),
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
    /// A client trusting `ca_pem` and presenting `identity`, reaching the `workers` at
    /// their registered addresses, those registered over vsock through the hybrid socket
    /// `hybrid`.
    pub fn new(
        ca_pem: &str,
        identity: &PemPair,
        hybrid: Option<PathBuf>,
        workers: Workers,
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
            .dns_resolver(Arc::new(WorkerResolver(workers)))
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

    /// Runs `request` on worker `worker_id`, registered at `address` (`host:port`),
    /// waiting up to `timeout`.
    pub async fn invoke(
        &self,
        worker_id: &str,
        address: &str,
        request: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeResponse, CallError> {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(CallError::Unavailable(format!(
                "invalid worker address {address:?}"
            )));
        };
        if host == WORKER_HOST {
            return self.invoke_hybrid(worker_id, port, request, timeout).await;
        }
        let name = ember_fleet::tls::worker_name(worker_id);
        let url = format!("https://{name}:{port}{}", ember_fleet::INVOKE);
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

    /// Runs `request` on worker `worker_id` at guest port `port` behind the hybrid vsock
    /// socket.
    async fn invoke_hybrid(
        &self,
        worker_id: &str,
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
        let name = ember_fleet::tls::worker_name(worker_id);
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| CallError::Unavailable(format!("invalid worker id: {e}")))?;
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
            .header(http::header::HOST, name)
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

/// Resolves the name control gives a worker to the address it registered, so that TLS
/// checks the name while TCP goes to the address.
struct WorkerResolver(Workers);

impl reqwest::dns::Resolve for WorkerResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let address = ember_fleet::tls::worker_of(name.as_str()).and_then(|id| self.0.address(id));
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let address = address.ok_or_else(|| format!("{name} is no worker control knows"))?;
            let found: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The invocation's result from the worker's answer: 503 means it turned the invocation
/// away before running it (draining), 429 that it has no room for it.
fn answer(status: StatusCode, body: &[u8]) -> Result<InvokeResponse, CallError> {
    // The worker's words, which end up in control's logs, cut short: it is not trusted.
    let reason = || {
        let text = String::from_utf8_lossy(body);
        text[..text.floor_char_boundary(MAX_REASON)].to_owned()
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Err(CallError::Unavailable(format!("{status}: {}", reason())));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(CallError::AtCapacity(reason()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::certs::FleetCa;
    use crate::fleet::fixtures::{version_key, worker_row};
    use ember_core::clock;
    use ember_fleet::messages::{CodeRef, FunctionConfig, Status};
    use rcgen::{CertificateParams, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    #[test]
    fn a_full_worker_is_told_apart_from_an_unavailable_one() {
        let full = answer(
            StatusCode::TOO_MANY_REQUESTS,
            "at capacity: x".repeat(500).as_bytes(),
        );
        match full {
            Err(CallError::AtCapacity(reason)) => {
                assert!(reason.starts_with("at capacity: x"), "{reason}");
                assert!(reason.len() <= MAX_REASON, "{} bytes kept", reason.len());
            }
            other => panic!("{other:?}"),
        }
        let draining = answer(StatusCode::SERVICE_UNAVAILABLE, b"draining");
        assert!(
            matches!(draining, Err(CallError::Unavailable(_))),
            "{draining:?}"
        );
        let broken = answer(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert!(matches!(broken, Err(CallError::Failed(_))), "{broken:?}");
    }

    /// A worker certificate for `id` from `ca`: certificate and key, PEM.
    fn worker_identity(ca: &FleetCa, id: &str) -> PemPair {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        PemPair {
            certificate: ca.sign_worker(&csr, id, clock::now_unix() + 600).unwrap(),
            key: key.serialize_pem(),
        }
    }

    /// A worker API on a loopback port showing `identity`, requiring control's client
    /// certificate as a worker does; sends every request head it reads to the channel and
    /// answers a successful invocation.
    async fn fake_worker(ca: &FleetCa, identity: &PemPair) -> (String, mpsc::Receiver<String>) {
        let config = ember_fleet::tls::server_config(
            ca.ca_pem(),
            &Identity {
                certificate_pem: &identity.certificate,
                key_pem: &identity.key,
            },
            false,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (seen, requests) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    continue;
                };
                let mut head = vec![0; 8192];
                let n = tls.read(&mut head).await.unwrap_or(0);
                let _ = seen
                    .send(String::from_utf8_lossy(&head[..n]).into_owned())
                    .await;
                let body = serde_json::to_vec(&InvokeResponse {
                    status: Status::Success,
                    payload: String::new(),
                    error_type: None,
                    log_tail: String::new(),
                    log: String::new(),
                    environment: 1,
                    duration_us: 1,
                    init_us: None,
                    max_memory_used_mib: 1,
                })
                .unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            }
        });
        (address, requests)
    }

    fn request() -> InvokeRequest {
        InvokeRequest {
            request_id: "r-1".into(),
            function: FunctionConfig {
                key: version_key("1"),
                code: CodeRef {
                    account: "a".into(),
                    artifact_id: "x".into(),
                    grant: "g".into(),
                },
                handler: "handle".into(),
                memory_mib: 64,
                timeout_ms: 1000,
                environment: Default::default(),
            },
            credentials: None,
            payload: String::new(),
        }
    }

    #[tokio::test]
    async fn calls_a_worker_only_when_it_proves_the_id_control_gave_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::open(dir.path()).unwrap();
        let workers = Workers::default();
        let client = WorkerClient::new(
            ca.ca_pem(),
            &ca.control_client().unwrap(),
            None,
            workers.clone(),
        )
        .unwrap();

        // w-b, a member of the fleet too, answers at the address w-a registered.
        let (address, mut requests) = fake_worker(&ca, &worker_identity(&ca, "w-b")).await;
        let mut row = worker_row("w-a", 8, clock::now_unix() + 600);
        row.address = address.clone();
        workers.add(&row);
        let timeout = Duration::from_secs(5);
        let refused = client.invoke("w-a", &address, &request(), timeout).await;
        assert!(
            matches!(refused, Err(CallError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(requests.try_recv().is_err(), "w-a's invocation reached w-b");

        // w-a itself gets it.
        let (address, mut requests) = fake_worker(&ca, &worker_identity(&ca, "w-a")).await;
        row.address = address.clone();
        workers.add(&row);
        let answered = client.invoke("w-a", &address, &request(), timeout).await;
        assert_eq!(answered.unwrap().status, Status::Success);
        let head = requests.recv().await.unwrap();
        assert!(head.starts_with("POST /worker/v1/invoke"), "{head}");
    }
}
