//! Test helper: signs requests with aws-sigv4's own signer, as the AWS SDKs do, so the
//! verifier is checked against an independent implementation.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;

/// How to sign.
pub(crate) struct Signer<'a> {
    pub key: &'a str,
    pub secret: &'a str,
    pub token: Option<&'a str>,
    pub region: &'a str,
    pub time: SystemTime,
    pub settings: SigningSettings,
    /// Sign `UNSIGNED-PAYLOAD` instead of the body's hash.
    pub unsigned: bool,
}

impl<'a> Signer<'a> {
    /// Signs for `lambda` in region `local` at `time`.
    pub(crate) fn new(key: &'a str, secret: &'a str, time: SystemTime) -> Signer<'a> {
        Signer {
            key,
            secret,
            token: None,
            region: "local",
            time,
            settings: SigningSettings::default(),
            unsigned: false,
        }
    }

    /// Adds the signature headers to `request`, which must have a `host` header.
    pub(crate) fn sign<B: AsRef<[u8]>>(&self, request: &mut http::Request<B>) {
        let identity = Credentials::new(
            self.key,
            self.secret,
            self.token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name("lambda")
            .time(self.time)
            .settings(self.settings.clone())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            if self.unsigned {
                SignableBody::UnsignedPayload
            } else {
                SignableBody::Bytes(request.body().as_ref())
            },
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(request);
    }
}
