//! What a stranger may hold of a listener: how many connections it serves at once, how
//! long a client may take over the TLS handshake, over a request's headers (and, between
//! requests, sit idle), and over a request's body, both between two reads (a client that
//! stalls) and in all (a client that drips). The HTTPS accept loop ([`crate::tls_serve`])
//! applies them to every listener it serves: control's API and fleet listeners and
//! emberd's worker API.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tower_http::timeout::TimeoutBody;

/// A listener's limits on its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel's accept queue until
    /// one ends (and the kernel refuses them when that queue is full).
    pub max_connections: usize,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers, counted from the end of
    /// the previous response on a kept-alive connection (so it is the idle limit too).
    pub header_timeout: Duration,
    /// How long a request's body may go without a byte arriving.
    pub body_timeout: Duration,
    /// How long a request's whole body may take to arrive, from its headers.
    pub body_deadline: Duration,
}

impl Limits {
    /// 1024 connections; 10 s for the handshake, 30 s for the headers and between
    /// requests, 30 s of silence within a body and 5 minutes for a whole body (75 MiB at
    /// a quarter MiB per second).
    pub const DEFAULT: Limits = Limits {
        max_connections: 1024,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        body_deadline: Duration::from_secs(300),
    };

    /// Wraps a request's `body` so reading it fails once it stalls for
    /// [`Limits::body_timeout`] or runs past [`Limits::body_deadline`].
    pub fn bound_body<B>(&self, body: B) -> BoundedBody<B> {
        BoundedBody {
            inner: Box::pin(TimeoutBody::new(self.body_timeout, body)),
            deadline: Box::pin(tokio::time::sleep_until(
                Instant::now() + self.body_deadline,
            )),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// A request body read within [`Limits`]: each frame within the stall timeout (tower-http's
/// [`TimeoutBody`]), all of them before the deadline.
pub struct BoundedBody<B> {
    inner: Pin<Box<TimeoutBody<B>>>,
    deadline: Pin<Box<Sleep>>,
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl<B> Body for BoundedBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        self.inner.as_mut().poll_frame(cx).map_err(|e| {
            if e.is::<tower_http::timeout::TimeoutError>() {
                Box::new(BodyTimeout)
            } else {
                e
            }
        })
    }
}
