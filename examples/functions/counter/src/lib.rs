//! A reactor function that keeps state: one instance serves every invocation of an
//! environment, so this counter goes 1, 2, 3, … until the environment is recycled.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

ember_function::reactor!(count);

static COUNT: AtomicU64 = AtomicU64::new(0);

/// Responds `{"count":n}` for the n-th invocation of this instance, whatever the event.
fn count(_event: &[u8]) -> Result<Vec<u8>, Infallible> {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    Ok(format!("{{\"count\":{n}}}").into_bytes())
}
