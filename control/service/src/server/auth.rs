//! The authentication middleware: every request must carry a valid SigV4 signature by an
//! account's access key or by execution-role credentials; it then reaches the API with a
//! [`Principal`] in its extensions, and otherwise is answered here with Lambda's error.
//!
//! Everything decidable from the headers is decided before the body is read: their shape,
//! the clock, the scope, the key, and (when the client declares the payload hash in
//! `x-amz-content-sha256`, or `UNSIGNED-PAYLOAD`) the signature itself, which covers the
//! declared hash. A stranger's request is refused without reading its body. Only then is
//! the body read, up to [`MAX_BODY`], within the service's budget of bytes read at once
//! (the listener bounds how long it may take), and checked: against the declared hash,
//! or, when none was declared, as part of the signature.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;

use crate::api::error::ApiError;
use crate::server::sigv4::{self, AuthHeader, DeclaredPayload, SigV4Error};
use crate::service::{Principal, Service};
use ember_core::clock;
use ember_core::roles::{self, TokenError};
use ember_store::accounts;

/// The service name clients sign for.
pub const SERVICE: &str = "lambda";

/// The largest request body read: a 50 MiB ZIP, base64-encoded in a JSON request, fits.
pub const MAX_BODY: usize = 75 * 1024 * 1024;

/// Bodies larger than this are hashed off the async threads.
const INLINE_HASH: usize = 1024 * 1024;

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn authenticate(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    match verify(&service, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => {
            tracing::info!(kind = e.kind, reason = %e.message, "request refused");
            e.into_response()
        }
    }
}

/// The request with its body buffered and its [`Principal`] attached, or why not.
async fn verify(service: &Service, request: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = request.into_parts();
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(SigV4Error::Missing)
        .map_err(signature_error)?;
    let auth = AuthHeader::parse(header.to_str().unwrap_or_default()).map_err(signature_error)?;
    let time = sigv4::request_time(&parts.headers).map_err(signature_error)?;
    sigv4::check_time(time, Utc::now()).map_err(signature_error)?;
    // CloudWatch Logs requests (function logs) are signed for their own service name.
    let signing_name = if crate::api::logs::is_logs_request(parts.uri.path(), &parts.headers) {
        crate::api::logs::SIGNING_NAME
    } else {
        SERVICE
    };
    sigv4::check_scope(&auth, time, &service.settings.region, signing_name)
        .map_err(signature_error)?;
    let declared = DeclaredPayload::from_headers(&parts.headers).map_err(signature_error)?;
    let (principal, secret) = credentials(service, &auth, &parts.headers).await?;
    // A declared payload hash (or UNSIGNED-PAYLOAD) is what the signature covers: it is
    // checked before a byte of the body is read.
    if let Some(hash) = declared.signed_hash() {
        sigv4::verify(&parts, &auth, time, hash, &secret).map_err(signature_error)?;
    }

    let declared_len = body_len(&parts.headers).or_else(|| {
        let hint = axum::body::HttpBody::size_hint(&body).upper();
        hint.and_then(|n| usize::try_from(n).ok())
    });
    // Too large is known from the headers: refused before waiting for room.
    if declared_len.is_some_and(|len| len > MAX_BODY) {
        return Err(too_large());
    }
    let room = body_room(service, declared_len).await?;
    let body = read_body(&parts.headers, body).await?;
    let hash = if body.len() > INLINE_HASH {
        let bytes = body.clone();
        let declared = declared.clone();
        tokio::task::spawn_blocking(move || declared.check_body(&bytes))
            .await
            .map_err(|e| ApiError::service(format!("hashing the body: {e}")))?
    } else {
        declared.check_body(&body)
    }
    .map_err(signature_error)?;
    if declared.signed_hash().is_none() {
        sigv4::verify(&parts, &auth, time, &hash, &secret).map_err(signature_error)?;
    }
    drop(room);

    tracing::Span::current().record("account", tracing::field::display(&principal.account_id));
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// Room in the service's body budget for this request's body: its `length`, or the
/// largest body when it is not known. Waits for room up to the configured time, then
/// refuses the request as throttled.
async fn body_room(
    service: &Service,
    length: Option<usize>,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    let limits = &service.settings.requests;
    let wanted = length
        .unwrap_or(MAX_BODY)
        .min(MAX_BODY)
        .min(limits.body_memory);
    if wanted == 0 {
        return Ok(None);
    }
    let permits = u32::try_from(wanted).unwrap_or(u32::MAX);
    let room = service.body_reads.clone().acquire_many_owned(permits);
    match tokio::time::timeout(limits.body_wait, room).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(wanted, "too many request bodies being read; refused one");
            Err(ApiError::too_many_requests(
                "Too many requests are being uploaded at once; retry shortly",
            ))
        }
    }
}

/// Who the access key belongs to and its secret: an account's own key from the registry,
/// or role credentials whose session token verifies.
async fn credentials(
    service: &Service,
    auth: &AuthHeader,
    headers: &HeaderMap,
) -> Result<(Principal, String), ApiError> {
    let token = headers.get("x-amz-security-token");
    if auth.access_key_id.starts_with(roles::ACCESS_KEY_PREFIX) {
        // The token must be signed too, or it could be swapped for another.
        let signed = auth
            .signed_headers
            .iter()
            .any(|h| h == "x-amz-security-token");
        let token = token.filter(|_| signed).ok_or_else(invalid_token)?;
        return role_credentials(service, auth, token.to_str().unwrap_or_default()).await;
    }
    // Long-term keys take no session token.
    if token.is_some() {
        return Err(invalid_token());
    }
    let key = accounts::find_key(&service.registry, &auth.access_key_id)
        .await
        .map_err(account_error)?
        .ok_or_else(invalid_token)?;
    let principal = Principal {
        account_id: key.account_id,
        access_key_id: key.key_id,
        role: None,
    };
    Ok((principal, key.secret))
}

/// The role session `token` stands for, with the secret derived for it.
async fn role_credentials(
    service: &Service,
    auth: &AuthHeader,
    token: &str,
) -> Result<(Principal, String), ApiError> {
    let session = service
        .roles
        .verify(&auth.access_key_id, token, clock::now_unix())
        .map_err(|e| match e {
            TokenError::Expired { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ),
            TokenError::Malformed | TokenError::BadSignature => invalid_token(),
        })?;
    // An account removed since the credentials were issued has no access.
    let account = accounts::get(service.registry.pool(), &session.account_id)
        .await
        .map_err(account_error)?;
    if account.is_none() {
        return Err(invalid_token());
    }
    // Credentials die with the worker they were handed to: once it is revoked or gone
    // (or was never known here), whatever it kept of them is worthless.
    if !service.fleet.workers.stands(&session.worker) {
        return Err(invalid_token());
    }
    let principal = Principal {
        account_id: session.account_id,
        access_key_id: session.access_key_id,
        role: Some(session.role_arn),
    };
    Ok((principal, session.secret_access_key))
}

/// Reads the whole body, refusing one over [`MAX_BODY`] (before reading, when its
/// length is declared).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    if body_len(headers).is_some_and(|len| len > MAX_BODY) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::invalid_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// 413: the body is larger than [`MAX_BODY`].
fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "Request must be smaller than {MAX_BODY} bytes for the request body"
    ))
}

/// The declared `Content-Length`, if any.
fn body_len(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Lambda's answer to an unknown key or an invalid session token.
fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

fn signature_error(e: SigV4Error) -> ApiError {
    let kind = match e {
        SigV4Error::Missing => "MissingAuthenticationTokenException",
        SigV4Error::Incomplete(_) => "IncompleteSignatureException",
        SigV4Error::Expired { .. }
        | SigV4Error::NotYetCurrent { .. }
        | SigV4Error::Scope(_)
        | SigV4Error::PayloadMismatch
        | SigV4Error::Mismatch => "InvalidSignatureException",
    };
    ApiError::new(StatusCode::FORBIDDEN, kind, e.to_string())
}

fn account_error(e: accounts::AccountError) -> ApiError {
    tracing::error!(error = %e, "looking up credentials");
    ApiError::service(format!("looking up credentials: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::test_signing::Signer;
    use crate::service::Settings;
    use axum::routing::post;
    use axum::{Extension, Json, Router};
    use ember_core::keys::KeySource;
    use std::time::{Duration, SystemTime};
    use tower::ServiceExt;

    const ROLE: &str = "arn:aws:iam::123456789012:role/fn";
    /// The worker role credentials are handed to in these tests.
    const WORKER: &str = "w-0123456789abcdef";

    struct Harness {
        _dir: tempfile::TempDir,
        service: Arc<Service>,
        key: accounts::AccessKey,
    }

    async fn harness() -> Harness {
        harness_with(Settings::default()).await
    }

    async fn harness_with(settings: Settings) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::open(
            dir.path(),
            None,
            KeySource::DataDir(dir.path().to_owned()),
            settings,
        )
        .await
        .unwrap();
        service
            .fleet
            .workers
            .add(&crate::fleet::fixtures::worker_row(WORKER, 8, u64::MAX));
        let pool = service.registry.pool();
        let account = accounts::create(pool, "a").await.unwrap();
        let key = accounts::create_key(&service.registry, &account.id)
            .await
            .unwrap();
        Harness {
            _dir: dir,
            service: Arc::new(service),
            key,
        }
    }

    impl Harness {
        /// Sends `request` through the middleware to a handler that echoes the principal
        /// and the body it received.
        async fn send(
            &self,
            request: http::Request<Vec<u8>>,
        ) -> (StatusCode, HeaderMap, serde_json::Value) {
            self.send_body(request.map(Body::from)).await
        }

        async fn send_body(
            &self,
            request: http::Request<Body>,
        ) -> (StatusCode, HeaderMap, serde_json::Value) {
            let app = Router::new()
                .route(
                    "/whoami",
                    post(
                        |Extension(p): Extension<Principal>, body: Bytes| async move {
                            Json(serde_json::json!({
                                "account": p.account_id,
                                "key": p.access_key_id,
                                "role": p.role,
                                "body": String::from_utf8_lossy(&body),
                            }))
                        },
                    ),
                )
                .layer(axum::middleware::from_fn_with_state(
                    self.service.clone(),
                    authenticate,
                ));
            let response = app.oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (parts.status, parts.headers, json)
        }

        async fn send_signed(
            &self,
            signer: &Signer<'_>,
            body: &[u8],
        ) -> (StatusCode, HeaderMap, serde_json::Value) {
            let mut request = request(body);
            signer.sign(&mut request);
            self.send(request).await
        }
    }

    fn request(body: &[u8]) -> http::Request<Vec<u8>> {
        http::Request::post("/whoami")
            .header("host", "localhost:9443")
            .body(body.to_vec())
            .unwrap()
    }

    fn assert_error(
        reply: (StatusCode, HeaderMap, serde_json::Value),
        status: u16,
        kind: &str,
    ) -> String {
        let (code, headers, body) = reply;
        assert_eq!(code.as_u16(), status, "{body}");
        assert_eq!(headers["x-amzn-errortype"], kind, "{body}");
        body["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn attaches_the_principal_and_the_body() {
        let h = harness().await;
        let signer = Signer::new(&h.key.key_id, &h.key.secret, SystemTime::now());
        let (status, _, body) = h.send_signed(&signer, b"{\"x\":1}").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["account"], h.key.account_id);
        assert_eq!(body["key"], h.key.key_id);
        assert_eq!(body["role"], serde_json::Value::Null);
        assert_eq!(body["body"], "{\"x\":1}");
    }

    #[tokio::test]
    async fn accepts_role_credentials_until_they_expire() {
        let h = harness().await;
        let now = clock::now_unix();
        let creds = h
            .service
            .roles
            .credentials(&h.key.account_id, ROLE, WORKER, now)
            .unwrap();
        let mut signer = Signer::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            SystemTime::now(),
        );
        signer.token = Some(&creds.session_token);
        let (status, _, body) = h.send_signed(&signer, b"").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["account"], h.key.account_id);
        assert_eq!(body["key"], creds.access_key_id);
        assert_eq!(body["role"], ROLE);

        // The same keys without their token, or with it unsigned, or with another token.
        signer.token = None;
        let message = assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "UnrecognizedClientException",
        );
        assert_eq!(
            message,
            "The security token included in the request is invalid."
        );
        let mut request = request(b"");
        signer.sign(&mut request);
        request
            .headers_mut()
            .insert("x-amz-security-token", creds.session_token.parse().unwrap());
        assert_error(h.send(request).await, 403, "UnrecognizedClientException");
        let other = h
            .service
            .roles
            .credentials(&h.key.account_id, "arn:other", WORKER, now)
            .unwrap();
        signer.token = Some(&other.session_token);
        assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "UnrecognizedClientException",
        );
        // The role's secret is not the account key's: signing with the wrong one fails.
        signer.token = Some(&creds.session_token);
        signer.secret = &h.key.secret;
        assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "InvalidSignatureException",
        );

        // Credentials issued two hours ago expired an hour ago.
        let old = ember_core::roles::RoleIssuer::load_or_create(&h.service.data_dir)
            .unwrap()
            .credentials(&h.key.account_id, ROLE, WORKER, now - 7200)
            .unwrap();
        let mut signer = Signer::new(
            &old.access_key_id,
            &old.secret_access_key,
            SystemTime::now(),
        );
        signer.token = Some(&old.session_token);
        let message = assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "ExpiredTokenException",
        );
        assert_eq!(
            message,
            "The security token included in the request is expired"
        );
    }

    #[tokio::test]
    async fn role_credentials_die_with_the_worker_they_were_handed_to() {
        let h = harness().await;
        let creds = h
            .service
            .roles
            .credentials(&h.key.account_id, ROLE, WORKER, clock::now_unix())
            .unwrap();
        let mut signer = Signer::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            SystemTime::now(),
        );
        signer.token = Some(&creds.session_token);
        assert_eq!(h.send_signed(&signer, b"").await.0, StatusCode::OK);
        h.service
            .fleet
            .workers
            .set_state(WORKER, ember_store::workers::WorkerState::Revoked);
        assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "UnrecognizedClientException",
        );
        // Nor do those of a worker control never knew of.
        let stray = h
            .service
            .roles
            .credentials(&h.key.account_id, ROLE, "w-1", clock::now_unix())
            .unwrap();
        let mut signer = Signer::new(
            &stray.access_key_id,
            &stray.secret_access_key,
            SystemTime::now(),
        );
        signer.token = Some(&stray.session_token);
        assert_error(
            h.send_signed(&signer, b"").await,
            403,
            "UnrecognizedClientException",
        );
    }

    #[tokio::test]
    async fn refuses_unknown_keys_wrong_secrets_and_missing_signatures() {
        let h = harness().await;
        let now = SystemTime::now();
        let unknown = Signer::new("AKIAAAAAAAAAAAAAAAAA", &h.key.secret, now);
        let message = assert_error(
            h.send_signed(&unknown, b"").await,
            403,
            "UnrecognizedClientException",
        );
        assert_eq!(
            message,
            "The security token included in the request is invalid."
        );

        let wrong = Signer::new(
            &h.key.key_id,
            "0123456789012345678901234567890123456789",
            now,
        );
        let message = assert_error(
            h.send_signed(&wrong, b"").await,
            403,
            "InvalidSignatureException",
        );
        assert!(
            message.starts_with("The request signature we calculated does not match"),
            "{message}"
        );

        let mut other_region = Signer::new(&h.key.key_id, &h.key.secret, now);
        other_region.region = "us-east-1";
        let message = assert_error(
            h.send_signed(&other_region, b"").await,
            403,
            "InvalidSignatureException",
        );
        assert!(message.contains("region"), "{message}");

        let stale = Signer::new(
            &h.key.key_id,
            &h.key.secret,
            now - Duration::from_secs(20 * 60),
        );
        let message = assert_error(
            h.send_signed(&stale, b"").await,
            403,
            "InvalidSignatureException",
        );
        assert!(message.starts_with("Signature expired: "), "{message}");

        let message = assert_error(
            h.send(request(b"")).await,
            403,
            "MissingAuthenticationTokenException",
        );
        assert_eq!(message, "Missing Authentication Token");

        // A long-term key presented with a session token.
        let mut with_token = Signer::new(&h.key.key_id, &h.key.secret, now);
        with_token.token = Some("v1.x");
        assert_error(
            h.send_signed(&with_token, b"").await,
            403,
            "UnrecognizedClientException",
        );

        // The signed body must be the one that arrives.
        let signer = Signer::new(&h.key.key_id, &h.key.secret, now);
        let mut request = request(b"{}");
        signer.sign(&mut request);
        *request.body_mut() = b"{\"admin\":true}".to_vec();
        assert_error(h.send(request).await, 403, "InvalidSignatureException");
    }

    #[tokio::test]
    async fn refuses_bodies_over_the_limit() {
        let h = harness().await;
        let signer = Signer::new(&h.key.key_id, &h.key.secret, SystemTime::now());
        // Declared too large: refused before reading.
        let mut declared = request(b"");
        signer.sign(&mut declared);
        declared.headers_mut().insert(
            "content-length",
            (MAX_BODY + 1).to_string().parse().unwrap(),
        );
        assert_error(h.send(declared).await, 413, "RequestTooLargeException");
        // Not declared: refused once the limit is passed.
        let mut streamed = request(b"");
        signer.sign(&mut streamed);
        *streamed.body_mut() = vec![b' '; MAX_BODY + 1];
        assert_error(h.send(streamed).await, 413, "RequestTooLargeException");
    }

    /// A body whose bytes never come, as a client that sends only headers.
    struct Never;

    impl axum::body::HttpBody for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    /// `request`'s head with a body that never comes, declaring `length` bytes.
    fn headers_only(request: http::Request<Vec<u8>>, length: usize) -> http::Request<Body> {
        let mut request = request.map(|_| Body::new(Never));
        request
            .headers_mut()
            .insert("content-length", length.to_string().parse().unwrap());
        request
    }

    #[tokio::test]
    async fn refuses_a_bad_signature_over_a_declared_payload_without_the_body() {
        let h = harness().await;
        let wrong = "0123456789012345678901234567890123456789";
        for unsigned in [true, false] {
            let mut signer = Signer::new(&h.key.key_id, wrong, SystemTime::now());
            signer.unsigned = unsigned;
            signer.settings.payload_checksum_kind =
                aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
            let mut signed = request(b"{}");
            signer.sign(&mut signed);
            assert!(signed.headers().contains_key("x-amz-content-sha256"));
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                h.send_body(headers_only(signed, 70 << 20)),
            )
            .await
            .expect("refused without waiting for the body");
            assert_error(reply, 403, "InvalidSignatureException");
        }
        // Without a declared hash (how the AWS CLI signs), an unknown key, a stale clock
        // and a foreign scope are refused from the headers as well.
        let now = SystemTime::now();
        let unknown = Signer::new("AKIAAAAAAAAAAAAAAAAA", &h.key.secret, now);
        let stale = Signer::new(
            &h.key.key_id,
            &h.key.secret,
            now - Duration::from_secs(1200),
        );
        let mut foreign = Signer::new(&h.key.key_id, &h.key.secret, now);
        foreign.region = "us-east-1";
        for (signer, kind) in [
            (unknown, "UnrecognizedClientException"),
            (stale, "InvalidSignatureException"),
            (foreign, "InvalidSignatureException"),
        ] {
            let mut signed = request(b"");
            signer.sign(&mut signed);
            assert!(!signed.headers().contains_key("x-amz-content-sha256"));
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                h.send_body(headers_only(signed, 70 << 20)),
            )
            .await
            .expect("refused without waiting for the body");
            assert_error(reply, 403, kind);
        }
        // A streaming payload is refused from its headers too.
        let signer = Signer::new(&h.key.key_id, &h.key.secret, SystemTime::now());
        let mut signed = request(b"");
        signer.sign(&mut signed);
        signed.headers_mut().insert(
            "x-amz-content-sha256",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".parse().unwrap(),
        );
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            h.send_body(headers_only(signed, 1 << 20)),
        )
        .await
        .expect("refused without waiting for the body");
        let message = assert_error(reply, 403, "IncompleteSignatureException");
        assert!(message.contains("Streaming"), "{message}");
    }

    #[tokio::test]
    async fn body_reads_past_the_budget_wait_then_are_throttled() {
        let h = harness_with(Settings {
            requests: crate::service::RequestLimits {
                body_memory: 1000,
                body_wait: Duration::from_millis(300),
                ..Default::default()
            },
            ..Settings::default()
        })
        .await;
        let h = Arc::new(h);
        let signer = Signer::new(&h.key.key_id, &h.key.secret, SystemTime::now());
        let mut signed = request(b"{}");
        signer.sign(&mut signed);
        // Room for 1000 bytes at once: a request declaring 800 holds most of it while its
        // body does not come.
        let mut stuck = request(b"");
        signer.sign(&mut stuck);
        let stuck = headers_only(stuck, 800);
        let holder = tokio::spawn({
            let h = h.clone();
            async move { h.send_body(stuck).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.service.body_reads.available_permits(), 200);

        // Small bodies still fit...
        let (status, _, body) = h.send(signed).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // ...a larger one waits, then is throttled.
        let mut large = request(&[b' '; 500]);
        signer.sign(&mut large);
        let started = std::time::Instant::now();
        let message = assert_error(h.send(large).await, 429, "TooManyRequestsException");
        assert!(started.elapsed() >= Duration::from_millis(300), "{message}");

        // Once the first is gone, there is room again: a waiting request gets it.
        let mut large = request(&[b' '; 500]);
        signer.sign(&mut large);
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.send(large).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        holder.abort();
        let (status, _, body) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(h.service.body_reads.available_permits(), 1000);
    }
}
