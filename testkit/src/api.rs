//! The Lambda API in process: a [`Service`] on a temporary data directory and its axum
//! router, driven with requests as the authentication layer leaves them (a [`Principal`]
//! in their extensions). For tests of the API's rules without TLS, SigV4 or a worker.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ember_control::service::{Principal, Service, Settings};
use ember_core::keys::KeySource;
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::AnyPool;
use tempfile::TempDir;
use tower::ServiceExt;

/// A service in a temporary directory with some accounts, and its API routes.
pub struct InProcess {
    pub service: Arc<Service>,
    router: Router,
    _dir: TempDir,
}

/// An answer: status, error type (from `x-amzn-ErrorType`) and JSON body (`Null` when
/// empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub error: Option<String>,
    pub body: Value,
}

impl Reply {
    /// Asserts `status` and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        self.body.clone()
    }

    /// Asserts an error of `status` and `kind`, returning its message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.error.as_deref(), Some(kind), "{self:?}");
        self.body["message"].as_str().unwrap().to_owned()
    }
}

impl InProcess {
    /// Opens a service with `settings` and creates `accounts` (id, name) in it.
    pub async fn open(settings: Settings, accounts: &[(&str, &str)]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySource::DataDir(dir.path().to_owned());
        let service = Service::open(dir.path(), None, keys, settings)
            .await
            .unwrap();
        for (id, name) in accounts {
            sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, 0)")
                .bind(id)
                .bind(name)
                .execute(service.registry.pool())
                .await
                .unwrap();
        }
        let service = Arc::new(service);
        InProcess {
            router: ember_control::api::router().with_state(service.clone()),
            service,
            _dir: dir,
        }
    }

    /// The registry's pool, for setting up and checking rows.
    pub fn pool(&self) -> &AnyPool {
        self.service.registry.pool()
    }

    /// Sends `body` to `method uri` as `account`.
    pub async fn send(&self, account: &str, method: &str, uri: &str, body: Vec<u8>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "lambda.test")
            .header("content-type", "application/json")
            .extension(Principal {
                account_id: account.to_owned(),
                access_key_id: format!("AKIA{account}"),
                role: None,
            })
            .body(Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let error = response
            .headers()
            .get("x-amzn-ErrorType")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            error,
            body,
        }
    }

    /// Sends `body` as JSON (nothing for `Null`).
    pub async fn call(&self, account: &str, method: &str, uri: &str, body: Value) -> Reply {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.send(account, method, uri, bytes).await
    }
}
