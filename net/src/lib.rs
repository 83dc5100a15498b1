//! What ember's two network services, `ember-control` and `emberd`, serve the same way:
//! binding listeners ([`listen`]), the HTTPS accept loop ([`tls_serve`]) and the limits it
//! puts on clients ([`limits`]), Prometheus
//! metrics ([`exposition`]), dialing a guest through a hybrid vsock socket
//! ([`hybrid_vsock`]), and AF_VSOCK inside a VM ([`vsock`]).

pub mod exposition;
pub mod hybrid_vsock;
pub mod limits;
pub mod listen;
pub mod tls_serve;
pub mod vsock;
