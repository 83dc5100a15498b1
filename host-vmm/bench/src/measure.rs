//! Turning samples into the report's numbers, and the process's RSS.

use std::time::Duration;

use serde_json::{json, Value};

pub fn rss_kib() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page / 1024)
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[index] * 10.0).round() / 10.0
}

pub fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({ "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99) })
}

pub fn ratio(a: &Value, b: &Value) -> Value {
    let (Some(a), Some(b)) = (a["p50"].as_f64(), b["p50"].as_f64()) else {
        return Value::Null;
    };
    json!((a / b * 100.0).round() / 100.0)
}
