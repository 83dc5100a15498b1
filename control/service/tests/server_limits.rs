//! What a stranger can make the running service hold (issue 11, item 3), through a raw TLS
//! client that does not verify the server, as a stranger would not: a request whose
//! signature is wrong is refused before its body, whatever `Content-Length` it declares;
//! headers sent too slowly and bodies that stall are cut off on the API and the fleet
//! listener alike, at the limits set by `ember-control serve`'s flags.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use ember_testkit::Control;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// 70 MiB, more than any body the service buffers quickly.
const HUGE: usize = 70 << 20;

/// The limits the service runs with here: short, so the tests are.
const FLAGS: &[&str] = &["--header-timeout-ms", "700", "--body-timeout-ms", "700"];

/// Accepts any server certificate: a stranger checks nothing.
#[derive(Debug)]
struct Anything(Arc<CryptoProvider>);

impl ServerCertVerifier for Anything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `endpoint` (`https://HOST:PORT`), handshake done.
fn connect(endpoint: &str) -> Tls {
    let addr = endpoint.strip_prefix("https://").unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Reads what the server sends until it has sent a whole response with a body of
/// `Content-Length`, or closes, or 10 s pass.
fn read_response(tls: &mut Tls) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The admin's key id and secret from `DIR/credentials`.
fn admin_keys(control: &Control) -> (String, String) {
    let text = fs::read_to_string(control.credentials()).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    (
        field("aws_access_key_id = "),
        field("aws_secret_access_key = "),
    )
}

/// The head of a `POST /2015-03-31/functions` to `control` declaring `length` bytes of
/// body, signed by aws-sigv4 with `key`/`secret` and `x-amz-content-sha256: payload`
/// (`None` signs the empty body's hash without the header).
fn signed_head(
    control: &Control,
    key: &str,
    secret: &str,
    payload: Option<&str>,
    length: usize,
) -> String {
    let url = format!("{}/2015-03-31/functions", control.endpoint);
    let host = control.endpoint.strip_prefix("https://").unwrap();
    let identity = Credentials::new(key, secret, None, None, "test").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("local")
        .name("lambda")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let mut headers = vec![("host".to_owned(), host.to_owned())];
    if let Some(payload) = payload {
        headers.push(("x-amz-content-sha256".to_owned(), payload.to_owned()));
    }
    let body = match payload {
        Some("UNSIGNED-PAYLOAD") => SignableBody::UnsignedPayload,
        Some(hash) => SignableBody::Precomputed(hash.to_owned()),
        None => SignableBody::Bytes(b""),
    };
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = http::Request::post("/2015-03-31/functions")
        .body(())
        .unwrap();
    for (name, value) in &headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    instructions.apply_to_request_http1x(&mut request);
    let mut head = "POST /2015-03-31/functions HTTP/1.1\r\n".to_owned();
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ));
    head
}

/// Sends `head` alone and returns the answer, asserting it came within 3 s.
fn answer_to_head(control: &Control, head: &str) -> String {
    let mut tls = connect(&control.endpoint);
    let started = Instant::now();
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    let answer = read_response(&mut tls);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}: {answer}"
    );
    answer
}

/// Asserts `answer` is the AWS-shaped error `kind` with `status`.
fn assert_aws_error(answer: &str, status: u16, kind: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "{answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("x-amzn-errortype: {}", kind.to_ascii_lowercase())),
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        json["message"].is_string() || json["Message"].is_string(),
        "{body}"
    );
}

#[test]
fn a_bad_signature_is_refused_before_a_huge_body() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(dir.path(), FLAGS);
    let (key, secret) = admin_keys(&control);
    let wrong = "0123456789012345678901234567890123456789";
    let some_hash = "a".repeat(64);

    // A known key with the wrong secret: the signature covers the declared payload hash,
    // so it is checked without the body.
    for payload in ["UNSIGNED-PAYLOAD", some_hash.as_str()] {
        let head = signed_head(&control, &key, wrong, Some(payload), HUGE);
        let answer = answer_to_head(&control, &head);
        assert_aws_error(&answer, 403, "InvalidSignatureException");
    }
    // An unknown key, whatever the payload: refused at the key.
    let head = signed_head(&control, "AKIAAAAAAAAAAAAAAAAA", &secret, None, HUGE);
    assert_aws_error(
        &answer_to_head(&control, &head),
        403,
        "UnrecognizedClientException",
    );
    // Streaming payloads are not taken, and that is known from the headers.
    let head = signed_head(
        &control,
        &key,
        &secret,
        Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        HUGE,
    );
    assert_aws_error(
        &answer_to_head(&control, &head),
        403,
        "IncompleteSignatureException",
    );

    // The right secret with a declared hash passes the signature, then the body must
    // match it.
    let mut tls = connect(&control.endpoint);
    let head = signed_head(&control, &key, &secret, Some(&some_hash), 2);
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(b"{}").unwrap();
    tls.flush().unwrap();
    assert_aws_error(&read_response(&mut tls), 403, "InvalidSignatureException");
}

#[test]
fn slow_headers_are_cut_off_on_the_api_and_fleet_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(dir.path(), FLAGS);
    for endpoint in [&control.endpoint, &control.fleet_endpoint] {
        let mut tls = connect(endpoint);
        let started = Instant::now();
        tls.write_all(b"POST /2015-03-31/functions HTTP/1.1\r\nhost: localhost\r\n")
            .unwrap();
        tls.flush().unwrap();
        // A header line every 200 ms, never the end of the headers.
        let mut closed = false;
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(200));
            if tls
                .write_all(b"x-slow: 1\r\n")
                .and_then(|()| tls.flush())
                .is_err()
            {
                closed = true;
                break;
            }
        }
        if !closed {
            let answer = read_response(&mut tls);
            assert!(!answer.starts_with("HTTP/1.1 2"), "{endpoint}: {answer}");
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{endpoint}: open for {took:?}"
        );
    }
}

#[test]
fn a_stalled_body_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(dir.path(), FLAGS);
    let (key, secret) = admin_keys(&control);
    let mut tls = connect(&control.endpoint);
    let head = signed_head(&control, &key, &secret, Some("UNSIGNED-PAYLOAD"), 1000);
    let started = Instant::now();
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(b"{\"FunctionName\":").unwrap();
    tls.flush().unwrap();
    let answer = read_response(&mut tls);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "cut off after {took:?}: {answer}"
    );
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");
}

#[test]
fn connections_past_the_cap_wait_without_disturbing_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(dir.path(), &["--max-connections", "2"]);
    // An unsigned request: answered (403) on a connection kept alive.
    let ask = |tls: &mut Tls| {
        tls.write_all(b"GET /2015-03-31/functions/ HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        tls.flush().unwrap();
        assert_aws_error(
            &read_response(tls),
            403,
            "MissingAuthenticationTokenException",
        );
    };
    let mut first = connect(&control.endpoint);
    let mut second = connect(&control.endpoint);
    ask(&mut first);
    ask(&mut second);

    // A third is not served while both are open: its handshake does not complete...
    let addr = control.endpoint.strip_prefix("https://").unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut third = StreamOwned::new(connection, tcp);
    let mut waited = false;
    while third.conn.is_handshaking() {
        if third.conn.complete_io(&mut third.sock).is_err() {
            waited = true;
            break;
        }
    }
    assert!(waited, "a third connection was served past the cap");
    // ...while the established ones still are.
    ask(&mut first);
    ask(&mut second);

    // Once one ends, the waiting one is served.
    drop(first);
    third
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while third.conn.is_handshaking() {
        third.conn.complete_io(&mut third.sock).unwrap();
    }
    ask(&mut third);
    ask(&mut second);
}
