//! A reactor function: the module is instantiated once per environment, `_initialize` runs
//! once, then the exported `handle` runs once per invocation. The event is stdin (read to
//! EOF), the response is stdout, logs go to stderr; `ember_function::reactor!` is that glue.

ember_function::reactor!(greet);

/// Responds `{"message":"Hello, <name>!"}` for the event `{"name":"<name>"}`; an empty event,
/// or one without a string `name`, greets "world". An event that is not JSON is an error.
fn greet(event: &[u8]) -> Result<Vec<u8>, String> {
    let name = if event.trim_ascii().is_empty() {
        "world".to_string()
    } else {
        let event: serde_json::Value =
            serde_json::from_slice(event).map_err(|e| format!("the event is not JSON: {e}"))?;
        event
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("world")
            .to_string()
    };
    eprintln!("hello: greeting {name:?}");
    let response = serde_json::json!({ "message": format!("Hello, {name}!") });
    Ok(serde_json::to_vec(&response).expect("a JSON value serializes"))
}
