//! A command function: `_start` runs once per invocation, in a fresh instance. The event is
//! stdin, the response is stdout.

use std::convert::Infallible;

ember_function::command!(echo);

/// Responds with the event, unchanged.
fn echo(event: &[u8]) -> Result<Vec<u8>, Infallible> {
    Ok(event.to_vec())
}
