//! Verifying AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 …` headers), as the
//! AWS CLI, boto3 and the SDKs sign requests to a non-S3 service such as Lambda.
//!
//! The verifier rebuilds the canonical request from what arrived and signs it again with
//! the caller's secret: the signing key and the HMAC come from the `aws-sigv4` crate, the
//! comparison is constant-time. The rebuilding follows the clients, not just the spec text:
//!
//! - the canonical URI is the path *as sent* (clients send it percent-encoded, e.g.
//!   `%24LATEST`, `arn%3Aaws%3A…`), with `.`/`..`/empty segments removed, then encoded
//!   once more (so `%24` becomes `%2524`): non-S3 services sign doubly encoded paths;
//! - the canonical query decodes each name and value and re-encodes it with RFC 3986's
//!   unreserved set, sorted by name then value;
//! - header values are trimmed and runs of spaces collapsed; repeated headers are joined
//!   with commas in the order they came;
//! - the payload hash is `x-amz-content-sha256` when sent (it must then match the body,
//!   or be `UNSIGNED-PAYLOAD`, which only TLS protects), else the SHA-256 of the body.
//!   With the header, the signature covers the declared hash, so it is checked before the
//!   body is read ([`DeclaredPayload`]); streaming (`STREAMING-…`) payloads are refused.
//!
//! Presigned (query-string) signatures are not accepted.

use std::time::SystemTime;

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use http::request::Parts;
use http::HeaderMap;
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash a client sends when it does not sign the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// How far a request's time may be from the service's, either way (as AWS).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);

/// `x-amz-date`'s format, ISO 8601 basic.
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

/// Everything but RFC 3986's unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The same for paths, where `/` separates segments.
const ENCODE_PATH: &AsciiSet = &ENCODE.remove(b'/');

/// Why a request's signature was refused; the messages are AWS's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The request carries no `Authorization` header.
    #[error("Missing Authentication Token")]
    Missing,
    /// The header or the request's date cannot be read.
    #[error("{0}")]
    Incomplete(String),
    #[error("Signature expired: {time} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        time: String,
        earliest: String,
        now: String,
    },
    #[error("Signature not yet current: {time} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent {
        time: String,
        latest: String,
        now: String,
    },
    /// The credential scope names another date, region or service.
    #[error("{0}")]
    Scope(String),
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadMismatch,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
}

/// A parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthHeader {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase names, in the order given.
    pub signed_headers: Vec<String>,
    /// 64 lowercase hex digits.
    pub signature: String,
}

impl AuthHeader {
    /// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
    /// SignedHeaders=a;b, Signature=HEX`.
    pub fn parse(value: &str) -> Result<AuthHeader, SigV4Error> {
        let incomplete = |m: &str| SigV4Error::Incomplete(m.to_owned());
        let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if algorithm != ALGORITHM {
            return Err(SigV4Error::Incomplete(format!(
                "Unsupported AWS 'algorithm': '{algorithm}'. Only '{ALGORITHM}' is accepted."
            )));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                incomplete("Invalid key=value pair (missing equal-sign) in Authorization header")
            })?;
            match name.trim() {
                "Credential" => credential = Some(value.trim()),
                "SignedHeaders" => signed_headers = Some(value.trim()),
                "Signature" => signature = Some(value.trim()),
                _ => {}
            }
        }
        let credential = credential
            .ok_or_else(|| incomplete("Authorization header requires 'Credential' parameter."))?;
        let signed_headers = signed_headers.ok_or_else(|| {
            incomplete("Authorization header requires 'SignedHeaders' parameter.")
        })?;
        let signature = signature
            .ok_or_else(|| incomplete("Authorization header requires 'Signature' parameter."))?;

        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(incomplete(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/aws4_request.",
            ));
        };
        if access_key_id.is_empty() {
            return Err(incomplete("Credential names no access key."));
        }
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
        let names_ok = signed_headers.iter().all(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
        });
        if !names_ok {
            return Err(incomplete(
                "SignedHeaders must be lowercase names separated by ';'.",
            ));
        }
        // As AWS: the host must be signed, so a request cannot be sent to another service.
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(incomplete(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let hex_ok = signature.len() == 64
            && signature
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(incomplete(
                "Signature must be 64 lowercase hexadecimal digits.",
            ));
        }
        Ok(AuthHeader {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_owned(),
        })
    }
}

/// The time the request was signed at: `x-amz-date`, else `Date` (an HTTP date).
pub fn request_time(headers: &HeaderMap) -> Result<DateTime<Utc>, SigV4Error> {
    if let Some(value) = headers.get("x-amz-date") {
        let text = value.to_str().unwrap_or_default();
        return NaiveDateTime::parse_from_str(text, AMZ_DATE)
            .map(|t| t.and_utc())
            .map_err(|_| {
                SigV4Error::Incomplete(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{text}'. \
                     See http://en.wikipedia.org/wiki/ISO_8601"
                ))
            });
    }
    if let Some(value) = headers.get(http::header::DATE) {
        let text = value.to_str().unwrap_or_default();
        return DateTime::parse_from_rfc2822(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                SigV4Error::Incomplete(format!("Date header is not an HTTP date: '{text}'"))
            });
    }
    Err(SigV4Error::Incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            .to_owned(),
    ))
}

/// Refuses a request signed more than [`MAX_SKEW`] before or after `now`, so a captured
/// request cannot be replayed later.
pub fn check_time(time: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), SigV4Error> {
    let format = |t: DateTime<Utc>| t.format(AMZ_DATE).to_string();
    if time < now - MAX_SKEW {
        return Err(SigV4Error::Expired {
            time: format(time),
            earliest: format(now - MAX_SKEW),
            now: format(now),
        });
    }
    if time > now + MAX_SKEW {
        return Err(SigV4Error::NotYetCurrent {
            time: format(time),
            latest: format(now + MAX_SKEW),
            now: format(now),
        });
    }
    Ok(())
}

/// Checks that the credential scope is for the request's date, this `region` and
/// `service`.
pub fn check_scope(
    auth: &AuthHeader,
    time: DateTime<Utc>,
    region: &str,
    service: &str,
) -> Result<(), SigV4Error> {
    let date = time.format("%Y%m%d").to_string();
    if auth.date != date {
        return Err(SigV4Error::Scope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{date}', from '{}'.",
            auth.date,
            time.format(AMZ_DATE)
        )));
    }
    if auth.region != region {
        return Err(SigV4Error::Scope(format!(
            "Credential should be scoped to a valid region, not '{}'. Use '{region}'.",
            auth.region
        )));
    }
    if auth.service != service {
        return Err(SigV4Error::Scope(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    Ok(())
}

/// What the client says it signed of the body, from `x-amz-content-sha256`: known from the
/// headers alone, so everything it decides is decided before the body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeclaredPayload {
    /// No header: the signature covers the SHA-256 of the body, which must be read first.
    Body,
    /// `UNSIGNED-PAYLOAD`: the signature covers everything but the body (TLS protects it).
    Unsigned,
    /// A SHA-256 in hex: the signature covers it, and the body must match it.
    Sha256(String),
}

impl DeclaredPayload {
    /// The header's meaning. Streaming (`aws-chunked`, `STREAMING-…`) payloads are refused:
    /// Lambda's API takes none, and their chunk signatures are not checked here.
    pub fn from_headers(headers: &HeaderMap) -> Result<DeclaredPayload, SigV4Error> {
        let Some(value) = headers.get("x-amz-content-sha256") else {
            return Ok(DeclaredPayload::Body);
        };
        let claimed = value.to_str().unwrap_or_default();
        if claimed == UNSIGNED_PAYLOAD {
            return Ok(DeclaredPayload::Unsigned);
        }
        if claimed.starts_with("STREAMING-") {
            return Err(SigV4Error::Incomplete(format!(
                "Streaming payloads ('{claimed}') are not supported; sign the body's SHA-256 \
                 or '{UNSIGNED_PAYLOAD}'."
            )));
        }
        if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SigV4Error::Incomplete(format!(
                "x-amz-content-sha256 must be a SHA-256 in hex or '{UNSIGNED_PAYLOAD}', not '{claimed}'."
            )));
        }
        Ok(DeclaredPayload::Sha256(claimed.to_owned()))
    }

    /// The payload hash of the canonical request when it is known before the body (the
    /// signature can then be checked at once), `None` when it is the body's.
    pub fn signed_hash(&self) -> Option<&str> {
        match self {
            DeclaredPayload::Body => None,
            DeclaredPayload::Unsigned => Some(UNSIGNED_PAYLOAD),
            DeclaredPayload::Sha256(hash) => Some(hash),
        }
    }

    /// Checks `body` against what was declared, and returns the payload hash the
    /// signature covers.
    pub fn check_body(&self, body: &[u8]) -> Result<String, SigV4Error> {
        let computed = || hex::encode(Sha256::digest(body));
        match self {
            DeclaredPayload::Body => Ok(computed()),
            DeclaredPayload::Unsigned => Ok(UNSIGNED_PAYLOAD.to_owned()),
            DeclaredPayload::Sha256(claimed) if *claimed == computed() => Ok(claimed.clone()),
            DeclaredPayload::Sha256(_) => Err(SigV4Error::PayloadMismatch),
        }
    }
}

/// The payload hash the client signed: `x-amz-content-sha256` if sent (checked against
/// `body` unless it is `UNSIGNED-PAYLOAD`), else the SHA-256 of `body`.
pub fn payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<String, SigV4Error> {
    DeclaredPayload::from_headers(headers)?.check_body(body)
}

/// Checks `auth`'s signature over the request (`parts` and the body's `payload_hash`),
/// signed at `time` with `secret`.
pub fn verify(
    parts: &Parts,
    auth: &AuthHeader,
    time: DateTime<Utc>,
    payload_hash: &str,
    secret: &str,
) -> Result<(), SigV4Error> {
    let canonical = canonical_request(parts, &auth.signed_headers, payload_hash)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{}/{}/{}/aws4_request\n{}",
        time.format(AMZ_DATE),
        auth.date,
        auth.region,
        auth.service,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = generate_signing_key(secret, SystemTime::from(time), &auth.region, &auth.service);
    let expected = calculate_signature(key, string_to_sign.as_bytes());
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(())
    } else {
        tracing::debug!(%canonical, "signature mismatch; the canonical request was");
        Err(SigV4Error::Mismatch)
    }
}

/// The canonical request: method, URI, query, the signed headers, their names and the
/// payload hash, one per line.
fn canonical_request(
    parts: &Parts,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, SigV4Error> {
    let mut out = format!(
        "{}\n{}\n{}\n",
        parts.method.as_str(),
        canonical_uri(parts.uri.path()),
        canonical_query(parts.uri.query().unwrap_or_default())
    );
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| trim_all(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let value = match (values.is_empty(), name.as_str()) {
            (false, _) => values.join(","),
            // HTTP/1.0 may carry the host in the request line only.
            (true, "host") => parts
                .uri
                .authority()
                .map(|a| a.to_string())
                .ok_or(SigV4Error::Mismatch)?,
            (true, _) => return Err(SigV4Error::Mismatch),
        };
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(&format!("\n{}\n{payload_hash}", signed_headers.join(";")));
    Ok(out)
}

/// The path as sent, dot segments and empty segments removed (as botocore does before
/// signing), then percent-encoded once more.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    percent_encode(normalized.as_bytes(), ENCODE_PATH).to_string()
}

/// Names and values decoded, re-encoded with the unreserved set, sorted.
fn canonical_query(query: &str) -> String {
    let encode =
        |s: &str| percent_encode(&percent_decode_str(s).collect::<Vec<u8>>(), ENCODE).to_string();
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(name), encode(value))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims spaces at both ends and turns runs of spaces into one.
fn trim_all(value: &str) -> String {
    value
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::test_signing::Signer;
    use aws_sigv4::http_request::PayloadChecksumKind;
    use std::time::Duration;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "127.0.0.1:9443";

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    /// A request to `uri` signed by aws-sigv4 (the SDKs' signer), as parts and body.
    fn signed(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> (Parts, Vec<u8>) {
        signed_by(&Signer::new(KEY, SECRET, at()), method, uri, headers, body)
    }

    fn signed_by(
        signer: &Signer<'_>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Parts, Vec<u8>) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(body.to_vec()).unwrap();
        signer.sign(&mut request);
        request.into_parts()
    }

    /// Runs every check the middleware runs, at the signing time.
    fn check(parts: &Parts, body: &[u8], secret: &str) -> Result<AuthHeader, SigV4Error> {
        let value = parts
            .headers
            .get("authorization")
            .ok_or(SigV4Error::Missing)?
            .to_str()
            .unwrap();
        let auth = AuthHeader::parse(value)?;
        let time = request_time(&parts.headers)?;
        check_time(time, DateTime::<Utc>::from(at()))?;
        check_scope(&auth, time, "local", "lambda")?;
        let hash = payload_hash(&parts.headers, body)?;
        verify(parts, &auth, time, &hash, secret)?;
        Ok(auth)
    }

    #[test]
    fn accepts_what_the_sdk_signer_signs() {
        let json = br#"{"FunctionName":"f"}"#;
        for (method, uri, body) in [
            ("GET", "/2015-03-31/functions/", &b""[..]),
            ("POST", "/2015-03-31/functions", json),
            ("GET", "/2015-03-31/functions/f%3A%24LATEST", b""),
            (
                "POST",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Alocal%3A123456789012%3Afunction%3Af/invocations",
                b"{}",
            ),
            (
                "GET",
                "/2015-03-31/functions/?MaxItems=10&Marker=a%2Bb%3D%3D&FunctionVersion=ALL",
                b"",
            ),
            ("GET", "/2017-03-31/functions/f/provisioned-concurrency?Qualifier=%24LATEST&List=ALL", b""),
            ("PUT", "/a/./b/../c//d", b"x"),
            ("DELETE", "/2015-03-31/functions/f?Qualifier=v%201~x", b""),
        ] {
            let (parts, body) = signed(method, uri, &[("content-type", "application/json")], body);
            let auth = check(&parts, &body, SECRET).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(auth.access_key_id, KEY);
            assert_eq!(auth.region, "local");
            assert!(auth.signed_headers.contains(&"host".to_owned()));
        }
    }

    #[test]
    fn accepts_session_tokens_unsigned_payloads_and_spaced_headers() {
        let mut signer = Signer::new(KEY, SECRET, at());
        signer.token = Some("v1.token");
        signer.settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let (parts, body) = signed_by(
            &signer,
            "POST",
            "/2015-03-31/functions/f/invocations",
            &[("x-custom", "  a   b  c ")],
            b"payload",
        );
        assert!(parts.headers.contains_key("x-amz-content-sha256"));
        assert_eq!(parts.headers["x-amz-security-token"], "v1.token");
        let auth = check(&parts, &body, SECRET).unwrap();
        assert!(auth
            .signed_headers
            .contains(&"x-amz-security-token".to_owned()));
        assert!(auth.signed_headers.contains(&"x-custom".to_owned()));
        // The body is covered through the header: another body is refused.
        assert_eq!(
            check(&parts, b"other", SECRET).unwrap_err(),
            SigV4Error::PayloadMismatch
        );

        // UNSIGNED-PAYLOAD: the signature covers everything but the body.
        signer.token = None;
        signer.unsigned = true;
        let (parts, _) = signed_by(&signer, "POST", "/x", &[], b"");
        assert_eq!(parts.headers["x-amz-content-sha256"], UNSIGNED_PAYLOAD);
        check(&parts, b"anything", SECRET).unwrap();
    }

    #[test]
    fn refuses_tampered_requests() {
        let (parts, body) = signed(
            "POST",
            "/2015-03-31/functions/f/invocations?Qualifier=1",
            &[("x-amz-invocation-type", "Event")],
            b"{\"a\":1}",
        );
        check(&parts, &body, SECRET).unwrap();
        assert_eq!(
            check(&parts, &body, "wrong-secret").unwrap_err(),
            SigV4Error::Mismatch
        );
        assert_eq!(
            check(&parts, b"{\"a\":2}", SECRET).unwrap_err(),
            SigV4Error::Mismatch
        );

        type Tamper = fn(&mut Parts);
        let tampered: [(&str, Tamper); 7] = [
            ("method", |p| p.method = http::Method::PUT),
            ("path", |p| {
                p.uri = "/2015-03-31/functions/g/invocations?Qualifier=1"
                    .parse()
                    .unwrap()
            }),
            ("query", |p| {
                p.uri = "/2015-03-31/functions/f/invocations?Qualifier=2"
                    .parse()
                    .unwrap()
            }),
            ("added query", |p| {
                p.uri = "/2015-03-31/functions/f/invocations?Qualifier=1&x=y"
                    .parse()
                    .unwrap()
            }),
            ("signed header", |p| {
                p.headers
                    .insert("x-amz-invocation-type", "RequestResponse".parse().unwrap());
            }),
            ("host", |p| {
                p.headers.insert("host", "127.0.0.1:1".parse().unwrap());
            }),
            ("removed signed header", |p| {
                p.headers.remove("x-amz-invocation-type");
            }),
        ];
        for (what, tamper) in tampered {
            let mut parts = parts.clone();
            tamper(&mut parts);
            assert_eq!(
                check(&parts, &body, SECRET).unwrap_err(),
                SigV4Error::Mismatch,
                "{what}"
            );
        }

        // A flipped signature digit; an unsigned header added changes nothing.
        let mut flipped = parts.clone();
        let value = flipped.headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        let last = value.chars().last().unwrap();
        let other = if last == '0' { '1' } else { '0' };
        let value = format!("{}{other}", &value[..value.len() - 1]);
        flipped
            .headers
            .insert("authorization", value.parse().unwrap());
        assert_eq!(
            check(&flipped, &body, SECRET).unwrap_err(),
            SigV4Error::Mismatch
        );
        let mut extra = parts.clone();
        extra.headers.insert("x-unsigned", "1".parse().unwrap());
        check(&extra, &body, SECRET).unwrap();
    }

    #[test]
    fn refuses_stale_future_and_misscoped_signatures() {
        let (parts, body) = signed("GET", "/x", &[], b"");
        let time = request_time(&parts.headers).unwrap();
        let now = DateTime::<Utc>::from(at());
        assert_eq!(time, now);
        check_time(time, now + MAX_SKEW).unwrap();
        check_time(time, now - MAX_SKEW).unwrap();
        let err = check_time(time, now + TimeDelta::minutes(20)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Signature expired: 20250615T150640Z is now earlier than 20250615T151140Z \
             (20250615T152640Z - 15 min.)"
        );
        let err = check_time(time, now - TimeDelta::minutes(20)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Signature not yet current: 20250615T150640Z is still later than"),
            "{err}"
        );

        let auth = AuthHeader::parse(parts.headers["authorization"].to_str().unwrap()).unwrap();
        assert!(matches!(
            check_scope(&auth, time, "us-east-1", "lambda"),
            Err(SigV4Error::Scope(_))
        ));
        assert!(matches!(
            check_scope(&auth, time, "local", "s3"),
            Err(SigV4Error::Scope(_))
        ));
        let next_day = time + TimeDelta::days(1);
        assert!(matches!(
            check_scope(&auth, next_day, "local", "lambda"),
            Err(SigV4Error::Scope(_))
        ));
        let _ = body;
    }

    #[test]
    fn reads_the_date_header_when_there_is_no_x_amz_date() {
        let mut headers = HeaderMap::new();
        headers.insert("date", "Sun, 15 Jun 2025 15:06:40 GMT".parse().unwrap());
        assert_eq!(request_time(&headers).unwrap(), DateTime::<Utc>::from(at()));
        headers.insert("x-amz-date", "20250615T150640Z".parse().unwrap());
        assert_eq!(request_time(&headers).unwrap(), DateTime::<Utc>::from(at()));
        headers.insert("x-amz-date", "2025-06-15".parse().unwrap());
        assert!(matches!(
            request_time(&headers),
            Err(SigV4Error::Incomplete(_))
        ));
        assert!(matches!(
            request_time(&HeaderMap::new()),
            Err(SigV4Error::Incomplete(_))
        ));
    }

    #[test]
    fn parses_and_refuses_authorization_headers() {
        let sig = "a".repeat(64);
        let good = format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20250615/local/lambda/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={sig}"
        );
        let auth = AuthHeader::parse(&good).unwrap();
        assert_eq!(
            auth,
            AuthHeader {
                access_key_id: "AKID".into(),
                date: "20250615".into(),
                region: "local".into(),
                service: "lambda".into(),
                signed_headers: vec!["host".into(), "x-amz-date".into()],
                signature: sig.clone(),
            }
        );
        for bad in [
            String::new(),
            "Bearer abc".into(),
            format!("AWS4-HMAC-SHA1 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={sig}"),
            "AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=host".into(),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=/20250615/local/lambda/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=Host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=host;;a, Signature={sig}"),
            "AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=host, Signature=ABC".into(),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=host, Signature={}", "A".repeat(64)),
            format!("AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20250615/local/lambda/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"),
        ] {
            assert!(matches!(AuthHeader::parse(&bad), Err(SigV4Error::Incomplete(_))), "{bad:?}");
        }
    }

    #[test]
    fn canonicalizes_as_botocore_does() {
        // botocore: quote(remove_dot_segments(path), safe='/~').
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(
            canonical_uri("/2015-03-31/functions/f%3A%24LATEST/"),
            "/2015-03-31/functions/f%253A%2524LATEST/"
        );
        assert_eq!(canonical_uri("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(canonical_uri("/a b~c"), "/a%20b~c");
        // botocore: sorted raw pairs of its own RFC 3986 encoding.
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("m=a%2bb%3D&x=%7E%20"), "m=a%2Bb%3D&x=~%20");
        assert_eq!(trim_all("  a   b c  "), "a b c");
    }
}
