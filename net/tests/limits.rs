//! The accept loop's limits against strangers on a real TLS listener: headers sent too
//! slowly (slowloris), a body that stalls or drips, and more connections than the cap.
//! Every listener ember has (control's API and fleet listeners, emberd's worker API) is
//! served by this loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use ember_net::limits::Limits;
use ember_net::tls_serve;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SHORT: Duration = Duration::from_millis(500);

/// Limits with short timeouts, as a test sets them.
fn short() -> Limits {
    Limits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(5),
        header_timeout: SHORT,
        body_timeout: SHORT,
        body_deadline: Duration::from_secs(30),
    }
}

struct Server {
    addr: std::net::SocketAddr,
    connector: TlsConnector,
}

/// Serves `GET /` ("ok") and `POST /echo` (the body's length) within `limits`.
async fn serve(limits: Limits) -> Server {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/echo",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls_serve::serve(
        listener,
        TlsAcceptor::from(Arc::new(server)),
        app,
        tls_serve::admit_all,
        limits,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    Server {
        addr,
        connector: TlsConnector::from(Arc::new(client)),
    }
}

impl Server {
    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }
}

/// `GET /` on `tls`, kept alive; the answer's body.
async fn get_ok(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("an established client is answered")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Reads until the server closes the connection, or `within` passes (a panic). What it
/// sent, if anything.
async fn closed_within(tls: &mut TlsStream<TcpStream>, within: Duration) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(read.is_ok(), "still open after {within:?}; got {text:?}");
    text
}

#[tokio::test]
async fn headers_sent_too_slowly_are_cut_off() {
    let server = serve(short()).await;
    let mut tls = server.connect().await;
    let started = Instant::now();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    // One more header line now and then, never the end of the headers.
    let dribble = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tls.write_all(b"x-slow: 1\r\n").await.is_err() {
                break;
            }
        }
    };
    dribble.await;
    closed_within(&mut tls, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let server = serve(short()).await;
    let mut tls = server.connect().await;
    get_ok(&mut tls).await;
    closed_within(&mut tls, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off() {
    let server = serve(short()).await;
    let mut tls = server.connect().await;
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let answer = closed_within(&mut tls, Duration::from_secs(3)).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_body_that_drips_is_cut_off_at_the_deadline() {
    let server = serve(Limits {
        body_timeout: Duration::from_secs(10),
        body_deadline: Duration::from_secs(1),
        ..short()
    })
    .await;
    let mut tls = server.connect().await;
    tls.write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // A byte every 100 ms: never stalled, never done.
    let (mut read, mut write) = tokio::io::split(tls);
    let drip = tokio::spawn(async move {
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), read.read_to_end(&mut answer)).await;
    drip.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "still reading after 4 s: {answer}");
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn connections_past_the_cap_wait_without_disturbing_the_others() {
    let server = serve(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(30),
        ..short()
    })
    .await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    get_ok(&mut first).await;
    get_ok(&mut second).await;

    // The third is not served while both are open...
    let third = tokio::spawn({
        let (addr, connector) = (server.addr, server.connector.clone());
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            get_ok(&mut tls).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!third.is_finished(), "a third connection was served");
    // ...while the established ones still are.
    get_ok(&mut first).await;
    get_ok(&mut second).await;

    // Once one ends, the waiting one is served.
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the waiting connection is served once there is room")
        .unwrap();
    get_ok(&mut second).await;
}
