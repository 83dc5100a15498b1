//! A CPU-bound reactor function: `{"mib":N}` (default 1) in, `{"mib":N,"sha256":"<hex>"}` out,
//! the digest of N MiB of `sha_pattern`'s byte pattern.

ember_function::reactor!(digest);

fn digest(event: &[u8]) -> Result<Vec<u8>, String> {
    let mib = if event.trim_ascii().is_empty() {
        1
    } else {
        let event: serde_json::Value =
            serde_json::from_slice(event).map_err(|e| format!("the event is not JSON: {e}"))?;
        match event.get("mib") {
            None => 1,
            Some(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("\"mib\" must be a non-negative integer, not {n}"))?,
        }
    };
    let response = serde_json::json!({ "mib": mib, "sha256": sha_pattern::digest_pattern(mib) });
    Ok(serde_json::to_vec(&response).expect("a JSON value serializes"))
}
