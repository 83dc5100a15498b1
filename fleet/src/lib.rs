//! The protocol between `ember-control` and its workers (`emberd`), shared by both sides so
//! neither can drift: the HTTP paths, the JSON messages ([`messages`]) and the TLS settings
//! ([`tls`]). `docs/fleet.md` describes the exchanges.
//!
//! Two listeners take part:
//! - control's **fleet listener** (`ember-control serve --fleet-listen`): workers register
//!   there (with a join token, before they have a certificate), then heartbeat,
//!   fetch code and deregister with their client certificate;
//! - each worker's **worker API**: control sends invocations there, presenting its own
//!   client certificate.
//!
//! Both are TLS 1.3 only, AES-GCM cipher suites only, and every request but registration
//! is mutually authenticated with certificates from control's fleet CA ([`tls`]). Between a VM and its
//! host they run over vsock ([`vsock`] says how the two ends are named there).

pub mod messages;
pub mod tls;
pub mod vsock;

/// Worker → control: join the fleet (join token, no client certificate yet).
pub const REGISTER: &str = "/fleet/v1/register";
/// Worker → control: inventory and load; the answer renews or ends the lease.
pub const HEARTBEAT: &str = "/fleet/v1/heartbeat";
/// Worker → control: leaving (drained).
pub const DEREGISTER: &str = "/fleet/v1/deregister";
/// Worker → control: `GET /fleet/v1/artifacts/{account}/{artifact}` with the grant in the
/// [`GRANT_HEADER`]: the function's module, decrypted.
pub const ARTIFACTS: &str = "/fleet/v1/artifacts";
/// The header that carries an artifact grant.
pub const GRANT_HEADER: &str = "x-ember-grant";
/// Control → worker: run one invocation.
pub const INVOKE: &str = "/worker/v1/invoke";
