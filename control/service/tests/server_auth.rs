//! Signature V4 authentication of the running service, through the stock AWS CLI, boto3
//! (tests/py/server_auth_boto3.py) and requests signed here with aws-sigv4: good keys pass,
//! a wrong secret, an unknown key and a stale signature are refused with Lambda's errors,
//! and every response carries a request id.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use ember_testkit::{aws_error, Control};

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

/// A credentials file with one profile `ember` holding `key` and `secret`.
fn credentials_file(dir: &Path, key: &str, secret: &str) -> PathBuf {
    let path = dir.join("forged-credentials");
    fs::write(
        &path,
        format!("[ember]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    path
}

/// GET `path` signed with `key`/`secret` as of `time`, with reqwest trusting the local CA.
fn signed_get(
    control: &Control,
    path: &str,
    key: &str,
    secret: &str,
    time: SystemTime,
) -> reqwest::blocking::Response {
    let url = format!("{}{path}", control.endpoint);
    let identity = Credentials::new(key, secret, None, None, "test").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("local")
        .name("lambda")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "GET",
        url.clone(),
        std::iter::empty(),
        SignableBody::Bytes(b""),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = http::Request::get(&url).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);

    let ca = reqwest::Certificate::from_pem(&fs::read(control.ca()).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut builder = client.get(&url);
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    builder.send().expect("HTTPS request to ember-control")
}

/// The error type and message of a Lambda error response.
fn error_of(response: reqwest::blocking::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let kind = response.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().unwrap();
    (status, kind, body["message"].as_str().unwrap().to_owned())
}

#[test]
fn refuses_wrong_secrets_and_unknown_keys_from_the_aws_cli() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let (key, secret) = admin_keys(&control);

    let wrong_secret = credentials_file(dir.path(), &key, &secret.to_lowercase());
    assert_ne!(secret, secret.to_lowercase());
    let out = control.aws_with(&wrong_secret, "ember", &["list-functions"]);
    assert_eq!(aws_error(&out), "InvalidSignatureException");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("The request signature we calculated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let unknown = credentials_file(dir.path(), "AKIAAAAAAAAAAAAAAAAA", &secret);
    let out = control.aws_with(&unknown, "ember", &["list-functions"]);
    assert_eq!(aws_error(&out), "UnrecognizedClientException");

    // The right keys still work.
    control.aws_json(&["list-functions"]);
}

#[test]
fn refuses_stale_signatures_and_ids_every_response() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let (key, secret) = admin_keys(&control);
    let now = SystemTime::now();

    let fresh = signed_get(&control, "/2015-03-31/functions/", &key, &secret, now);
    assert_eq!(fresh.status(), 200);
    let id = fresh.headers()["x-amzn-requestid"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let stale = now - Duration::from_secs(20 * 60);
    let response = signed_get(&control, "/2015-03-31/functions/", &key, &secret, stale);
    let other_id = response.headers()["x-amzn-requestid"].to_str().unwrap();
    assert_ne!(other_id, id);
    let (status, kind, message) = error_of(response);
    assert_eq!((status, kind.as_str()), (403, "InvalidSignatureException"));
    assert!(message.starts_with("Signature expired: "), "{message}");
    assert!(message.contains(" is now earlier than "), "{message}");

    // An unknown route is authenticated first, then answered as Lambda does.
    let response = signed_get(&control, "/2015-03-31/nowhere", &key, &secret, now);
    assert_eq!(error_of(response).1, "UnknownOperationException");
    let response = signed_get(&control, "/2015-03-31/nowhere", &key, "x", now);
    assert_eq!(error_of(response).1, "InvalidSignatureException");
}

#[test]
fn boto3_signs_requests_the_service_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let mut python = control.boto3("server_auth_boto3.py", &control.credentials());
    python.arg(&control.endpoint).arg(control.ca());
    let out = python
        .output()
        .expect("run python3 (with boto3: .ci/run installs it)");
    assert!(
        out.status.success(),
        "boto3 against ember-control failed (needs boto3: .ci/run installs it):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
