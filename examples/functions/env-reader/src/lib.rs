//! A reactor function that shows its configuration: responds with every environment variable
//! as one JSON object, sorted by key. Configuration and credentials reach a function this way.

use std::collections::BTreeMap;
use std::env;

ember_function::reactor!(env_vars);

/// Responds with the environment, whatever the event.
fn env_vars(_event: &[u8]) -> serde_json::Result<Vec<u8>> {
    // `vars_os` rather than `vars`: a variable that is not UTF-8 must not panic (trap).
    let vars: BTreeMap<String, String> = env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    serde_json::to_vec(&vars)
}
