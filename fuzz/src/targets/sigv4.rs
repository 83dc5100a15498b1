//! SigV4 verification of the public API, over what any stranger can send.
//!
//! - `sigv4_parse`: arbitrary `Authorization`, date, URI and headers go through every step
//!   the service runs (parse, time, scope, payload hash, verify); nothing panics and nothing
//!   forged verifies.
//! - `sigv4_round_trip`: requests with arbitrary paths, queries and header values, signed by
//!   aws-sigv4 (the SDKs' signer), verify: the canonical request is rebuilt as clients build
//!   it, whatever bytes they carry.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use chrono::{DateTime, Utc};
use ember_control::server::sigv4::{self, AuthHeader};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{error_label, Target};

pub const PARSE: Target = Target {
    name: "sigv4_parse",
    fed_by: "anyone who can reach the API port",
    seeds: parse_seeds,
    dictionary: &[
        b"AWS4-HMAC-SHA256 ",
        b"Credential=",
        b"SignedHeaders=",
        b"Signature=",
        b"/aws4_request",
        b"host;x-amz-date",
        b"20250615T150640Z",
        b"UNSIGNED-PAYLOAD",
        b"%2F",
        b"/../",
        b"\n",
        b",",
        b";",
    ],
    run: run_parse,
};

pub const ROUND_TRIP: Target = Target {
    name: "sigv4_round_trip",
    fed_by: "anyone who can reach the API port (its signed requests)",
    seeds: round_trip_seeds,
    dictionary: &[
        b"/", b"?", b"&", b"=", b"%", b" ", b"..", b".", b"+", b"~", b"$",
    ],
    run: run_round_trip,
};

const KEY: &str = "AKIDFUZZ";
const SECRET: &str = "fuzz-secret";
const REGION: &str = "local";

/// Signing time of every request: a fixed instant, so campaigns are repeatable.
fn signed_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn parse_seeds() -> Vec<Vec<u8>> {
    let (parts, _) = signed(
        "/2015-03-31/functions/f/invocations",
        &[("x-amz-target", "a  b")],
        b"{}",
    );
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let text = format!(
        "{}\n{}\n{}\n{}\nx-amz-target:a  b\n",
        header("authorization"),
        header("x-amz-date"),
        parts.uri,
        header("x-amz-content-sha256"),
    );
    vec![text.into_bytes()]
}

/// Lines: `Authorization`, `x-amz-date`, URI, `x-amz-content-sha256`, then `name:value`
/// headers; the body is empty.
fn run_parse(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let (auth, date, uri, hash) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let mut headers = HeaderMap::new();
    insert(&mut headers, "host", "127.0.0.1:9443");
    insert(&mut headers, "x-amz-date", date);
    insert(&mut headers, "x-amz-content-sha256", hash);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            insert(&mut headers, name, value);
        }
    }
    let auth = match AuthHeader::parse(auth) {
        Ok(auth) => auth,
        Err(err) => return format!("parse:{}", error_label(&err)),
    };
    let time = match sigv4::request_time(&headers) {
        Ok(time) => time,
        Err(err) => return format!("time:{}", error_label(&err)),
    };
    let now: DateTime<Utc> = signed_at().into();
    if let Err(err) = sigv4::check_time(time, now)
        .and_then(|()| sigv4::check_scope(&auth, time, REGION, "lambda"))
    {
        return format!("scope:{}", error_label(&err));
    }
    let hash = match sigv4::payload_hash(&headers, b"") {
        Ok(hash) => hash,
        Err(err) => return format!("hash:{}", error_label(&err)),
    };
    let Ok(mut request) = http::Request::builder().uri(uri).body(()) else {
        return "uri:refused".to_owned();
    };
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    match sigv4::verify(&parts, &auth, time, &hash, SECRET) {
        Ok(()) => panic!("a request nobody signed verified: {auth:?}"),
        Err(err) => format!("verify:{}", error_label(&err)),
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.trim().as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.append(name, value);
    }
}

fn round_trip_seeds() -> Vec<Vec<u8>> {
    vec![
        b"2015-03-31/functions/arn:aws:lambda:local:1:function:f/invocations\0Qualifier=$LATEST&x=1\0a  b \0{}".to_vec(),
        b"a/./b/../c/\0k=v=w&&k\0\0".to_vec(),
    ]
}

/// Characters SDKs escape in a path segment or a query value.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// NUL-separated: path segments (`/`-separated, each escaped as SDKs escape them), query
/// pairs (`&`-separated `name=value`, escaped the same), a header value (printable ASCII),
/// and the body.
fn run_round_trip(input: &[u8]) -> String {
    let mut fields = input.split(|b| *b == 0);
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let (path, query, header, body) = (
        text(fields.next()),
        text(fields.next()),
        text(fields.next()),
        fields.next().unwrap_or_default().to_vec(),
    );
    // The body's bytes only feed its hash; a short one keeps the campaign fast.
    let body = &body[..body.len().min(1024)];
    let mut path: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, ESCAPE).to_string())
        .collect();
    // A path ending in a dot segment is where signers disagree: botocore drops the slash
    // (`/a/b/..` → `/a`), aws-sigv4 keeps it as RFC 3986 does (`/a/`). The verifier follows
    // botocore (the AWS CLI), so such paths are left out; no Lambda path has dot segments.
    if path.last().is_some_and(|last| last == "." || last == "..") {
        path.push("x".to_owned());
    }
    let query: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            format!(
                "{}={}",
                utf8_percent_encode(name, ESCAPE),
                utf8_percent_encode(value, ESCAPE)
            )
        })
        .collect();
    let mut uri = format!("/{}", path.join("/"));
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let header: String = header
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    let (parts, body) = signed(&uri, &[("x-ember-fuzz", header.as_str())], body);

    let auth = AuthHeader::parse(parts.headers["authorization"].to_str().unwrap())
        .expect("the signer's Authorization header parses");
    let time = sigv4::request_time(&parts.headers).expect("the signer's date parses");
    sigv4::check_scope(&auth, time, REGION, "lambda").expect("the signer's scope");
    let hash = sigv4::payload_hash(&parts.headers, &body).expect("the signer's payload hash");
    if let Err(err) = sigv4::verify(&parts, &auth, time, &hash, SECRET) {
        panic!("a request signed by aws-sigv4 did not verify ({err}): {uri:?} {header:?}");
    }
    format!(
        "ok:{}:{}",
        path.len().min(4),
        if query.is_empty() {
            "no-query"
        } else {
            "query"
        }
    )
}

/// `uri` on 127.0.0.1:9443, signed as the SDKs sign (payload hash header included).
fn signed(uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (http::request::Parts, Vec<u8>) {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", "127.0.0.1:9443");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(body.to_vec()).expect("a valid request");
    let identity = Credentials::new(KEY, SECRET, None, None, "fuzz").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    let params = SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("lambda")
        .time(signed_at())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.uri().to_string(),
        request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().expect("ASCII header"))),
        SignableBody::Bytes(request.body()),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("signed").into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request.into_parts()
}
