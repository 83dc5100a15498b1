//! What ember's two network services, `ember-control` and `emberd`, serve the same way:
//! binding listeners ([`listen`]), the HTTPS accept loop ([`tls_serve`]) and Prometheus
//! metrics ([`exposition`]).

pub mod exposition;
pub mod listen;
pub mod tls_serve;
