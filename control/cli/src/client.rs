//! One signed HTTPS call to the Lambda API, the way botocore makes it: path parameters
//! percent-encoded, a JSON body, SigV4 over method, path, query, headers and the SHA-256 of
//! the whole body (service `lambda`), errors read from `x-amzn-ErrorType` and the body's
//! `message`. The service recomputes the canonical request from what it receives, so the
//! URL signed is exactly the URL sent.
//!
//! Trust is explicit: the built-in reqwest features give no root certificates, so only the
//! configured CA (ember-control's `ca.pem`) is trusted. A deployment behind a publicly
//! trusted certificate passes that chain's root as `--ca` too.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Body, Client as Http};
use reqwest::{Certificate, Method, Url};
use serde_json::Value;

use super::config::Settings;
use super::error::CliError;
use super::progress;

/// The signing name of Lambda's API.
const SERVICE: &str = "lambda";

/// What botocore leaves unescaped in a path parameter or query value: RFC 3986's unreserved
/// characters. `:` and `$` (ARNs, `$LATEST`) are escaped.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Longest a call may take: past the longest function timeout (900 s) with room for the
/// upload of a 50 MiB package.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(960);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Escapes one path segment (a function name or ARN, an alias name).
pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

/// One API request, before signing.
#[derive(Clone, Debug)]
pub struct Call {
    method: Method,
    /// Absolute path, segments already escaped with [`segment`].
    path: String,
    query: Vec<(&'static str, String)>,
    /// Extra headers, signed with the rest.
    headers: Vec<(&'static str, String)>,
    /// The body and its content type.
    body: Option<(Vec<u8>, &'static str)>,
    /// What the call is about, e.g. `function 'foo'`, for a not-found error.
    subject: String,
    /// The service name the call is signed for.
    service: &'static str,
}

impl Call {
    pub fn new(method: Method, path: String, subject: impl Into<String>) -> Call {
        Call {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            subject: subject.into(),
            service: SERVICE,
        }
    }

    /// A call to an AWS JSON 1.1 API such as CloudWatch Logs: `POST /` naming the operation
    /// in `X-Amz-Target`, signed for `service`.
    pub fn json_rpc(
        service: &'static str,
        target: String,
        body: &impl serde::Serialize,
        subject: impl Into<String>,
    ) -> Call {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        Call {
            body: Some((bytes, "application/x-amz-json-1.1")),
            service,
            ..Call::new(Method::POST, "/".into(), subject).header("x-amz-target", target)
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.query.push((name, value.into()));
        self
    }

    /// Adds a query parameter when `value` is given.
    pub fn query_opt(self, name: &'static str, value: Option<&str>) -> Call {
        match value {
            Some(value) => self.query(name, value),
            None => self,
        }
    }

    /// Adds a header (signed, like every header sent).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    /// Sends `body` as the JSON request body.
    pub fn json(mut self, body: &impl serde::Serialize) -> Call {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        self.body = Some((bytes, "application/json"));
        self
    }

    /// Sends `bytes` as they are (an invocation's event).
    pub fn bytes(mut self, bytes: Vec<u8>) -> Call {
        self.body = Some((bytes, "application/octet-stream"));
        self
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// A signed-request client for one endpoint.
#[derive(Debug)]
pub struct Client {
    http: Http,
    /// The endpoint without a trailing `/`; request paths are appended to it.
    endpoint: String,
    region: String,
    credentials: Credentials,
}

impl Client {
    pub fn new(settings: Settings) -> Result<Client, CliError> {
        let mut builder = Http::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ember-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca {
            for cert in load_ca(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Config(format!("cannot set up HTTPS: {e}")))?;
        Ok(Client {
            http,
            endpoint: settings.endpoint.as_str().trim_end_matches('/').to_owned(),
            region: settings.region,
            credentials: settings.credentials,
        })
    }

    /// The account the keys belong to, when the credentials say (`aws_account_id`).
    pub fn account_id(&self) -> Option<&str> {
        self.credentials.account_id().map(|a| a.as_str())
    }

    /// Sends a list call again and again with each `NextMarker`, and returns the items
    /// under `key` of every page.
    pub fn list_all(&self, call: Call, key: &str) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self.json(call.clone().query_opt("Marker", marker.as_deref()))?;
            match page.get(key) {
                Some(Value::Array(page_items)) => items.extend(page_items.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(_) => return Err(CliError::Protocol(format!("`{key}` is not a list"))),
            }
            match page.get("NextMarker").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && marker.as_deref() != Some(next) => {
                    marker = Some(next.to_owned())
                }
                _ => return Ok(items),
            }
        }
    }

    /// Signs and sends `call` and returns its JSON response (`null` when empty); a
    /// non-2xx answer becomes [`CliError::Api`].
    pub fn json(&self, call: Call) -> Result<Value, CliError> {
        let reply = self.send(call)?;
        if reply.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| CliError::Protocol(format!("the body is not JSON: {e}")))
    }

    /// Signs and sends `call`; a non-2xx answer becomes [`CliError::Api`].
    pub fn send(&self, call: Call) -> Result<Reply, CliError> {
        let url = self.url(&call)?;
        let (body, content_type) = match call.body {
            Some((body, content_type)) => (body, Some(content_type)),
            None => (Vec::new(), None),
        };
        let mut headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let mut request = self.http.request(call.method.clone(), url.clone());
        for (name, value) in self.sign(call.service, &call.method, &url, &headers, &body)? {
            request = request.header(name, value);
        }
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request
            .body(upload_body(body))
            .send()
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .map_err(|e| self.transport_error(&e))?
            .to_vec();
        if !status.is_success() {
            return Err(api_error(call.subject, status.as_u16(), &headers, &body));
        }
        Ok(Reply {
            status: status.as_u16(),
            headers,
            body,
        })
    }

    /// The full URL: endpoint, escaped path, escaped query.
    fn url(&self, call: &Call) -> Result<Url, CliError> {
        let mut url = format!("{}{}", self.endpoint, call.path);
        for (i, (name, value)) in call.query.iter().enumerate() {
            let separator = if i == 0 && !call.path.contains('?') {
                '?'
            } else {
                '&'
            };
            url.push(separator);
            url.push_str(name);
            url.push('=');
            url.push_str(&segment(value));
        }
        Url::parse(&url).map_err(|e| CliError::Config(format!("bad request URL {url}: {e}")))
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, and the session token if any) for
    /// a request with these signed `headers` and `body`.
    fn sign(
        &self,
        service: &str,
        method: &Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, CliError> {
        let identity = Identity::from(self.credentials.clone());
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CliError::Config(format!("cannot sign the request: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .and_then(|request| sign(request, &params))
        .map_err(|e| CliError::Config(format!("cannot sign the request: {e}")))?;
        let (instructions, _signature) = signable.into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    /// Explains a failure below HTTP: certificate trust, host name, or no connection.
    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        use rustls::CertificateError as C;
        match tls_error(e) {
            Some(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => CliError::WrongHost {
                host: e
                    .url()
                    .and_then(Url::host_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            Some(rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
                CliError::Untrusted
            }
            _ => CliError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: innermost(e),
            },
        }
    }
}

/// The certificates of a CA file (PEM, one or more).
pub fn load_ca(path: &Path) -> Result<Vec<Certificate>, CliError> {
    let pem = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .ok()
        .filter(|certs| !certs.is_empty())
        .ok_or_else(|| CliError::Config(format!("{}: no PEM certificate in it", path.display())))
}

/// The body to send; packages over [`progress::THRESHOLD`] show a progress bar on a
/// terminal.
fn upload_body(body: Vec<u8>) -> Body {
    let len = body.len() as u64;
    match progress::bar(len) {
        Some(bar) => Body::sized(progress::Reader::new(std::io::Cursor::new(body), bar), len),
        None => Body::from(body),
    }
}

/// Lambda's error: the type from `x-amzn-ErrorType` (botocore drops anything after a `:`),
/// the message from the JSON body's `message` (or `Message`).
fn api_error(
    subject: String,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> CliError {
    let kind = headers
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(':').next())
        .filter(|v| !v.is_empty())
        .unwrap_or("UnknownError")
        .to_owned();
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    CliError::Api {
        subject,
        status,
        kind,
        message,
    }
}

/// The rustls error behind a failed request, if any. Walks the source chain, looking inside
/// `io::Error`s too (their `source()` skips the error they wrap).
fn tls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = tls_error(inner) {
                return Some(tls);
            }
        }
        next = err.source();
    }
    None
}

/// The deepest cause's message: "Connection refused (os error 111)" says more than
/// "error sending request".
fn innermost(e: &reqwest::Error) -> String {
    let mut err: &dyn std::error::Error = e;
    while let Some(source) = err.source() {
        err = source;
    }
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn escapes_path_parameters_like_botocore() {
        assert_eq!(segment("my-fn_1.x~"), "my-fn_1.x~");
        assert_eq!(
            segment("arn:aws:lambda:local:123456789012:function:f:$LATEST"),
            "arn%3Aaws%3Alambda%3Alocal%3A123456789012%3Afunction%3Af%3A%24LATEST"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    fn client() -> Client {
        Client::new(Settings {
            endpoint: Url::parse("https://127.0.0.1:9443/").unwrap(),
            region: "local".into(),
            ca: None,
            credentials: super::super::credentials::keys("AKIA".into(), "s".into(), None, None),
        })
        .unwrap()
    }

    #[test]
    fn builds_urls_with_escaped_query_values() {
        let c = client();
        let call = Call::new(Method::GET, "/2015-03-31/functions/f".into(), "f")
            .query("Qualifier", "$LATEST")
            .query("Marker", "a+b/c=");
        assert_eq!(
            c.url(&call).unwrap().as_str(),
            "https://127.0.0.1:9443/2015-03-31/functions/f?Qualifier=%24LATEST&Marker=a%2Bb%2Fc%3D"
        );
        let list = Call::new(Method::GET, "/p?List=ALL".into(), "f").query("Marker", "m");
        assert_eq!(
            c.url(&list).unwrap().as_str(),
            "https://127.0.0.1:9443/p?List=ALL&Marker=m"
        );
    }

    #[test]
    fn signs_with_sigv4_for_lambda_in_the_region() {
        let c = client();
        let url = Url::parse("https://127.0.0.1:9443/2015-03-31/functions").unwrap();
        let headers = c
            .sign(
                SERVICE,
                &Method::POST,
                &url,
                &[("content-type", "application/json")],
                b"{}",
            )
            .unwrap();
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIA/"),
            "{auth}"
        );
        assert!(auth.contains("/local/lambda/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert!(headers.iter().any(|(n, _)| n == "x-amz-date"));
    }

    #[test]
    fn reads_lambda_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static("ResourceConflictException:http://internal/"),
        );
        let err = api_error(
            "function 'f'".into(),
            409,
            &headers,
            br#"{"Type":"User","message":"Function already exist: f"}"#,
        );
        assert_eq!(
            err.to_string(),
            "Function already exist: f (ResourceConflictException)"
        );
        let err = api_error("function 'f'".into(), 502, &HeaderMap::new(), b"<html>");
        assert_eq!(
            err.to_string(),
            "the service refused the request: HTTP 502 (UnknownError)"
        );
    }

    #[test]
    fn finds_tls_errors_wrapped_in_io_errors() {
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            tls_error(&wrapped),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ));
        assert!(tls_error(&std::io::Error::other("refused")).is_none());
    }
}
