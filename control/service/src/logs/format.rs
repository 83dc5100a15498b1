//! One invocation's log as Lambda writes it to CloudWatch Logs: `START`, the function's own
//! lines (its stderr, with the init phase's on the cold start that ran it), `END` and
//! `REPORT` (with `Init Duration` on cold starts only), in a stream per environment named
//! `YYYY/MM/DD/[VERSION]ID`.

use chrono::{DateTime, Utc};
use ember_fleet::messages::InvokeResponse;

/// What the log of one invocation is made from.
#[derive(Debug)]
pub struct Ran<'a> {
    pub request_id: &'a str,
    /// The version that ran.
    pub version: &'a str,
    pub memory_mib: i64,
    pub worker_id: &'a str,
    pub response: &'a InvokeResponse,
}

/// One line of the log: what one CloudWatch event's `message` holds.
pub fn lines(ran: &Ran<'_>) -> Vec<String> {
    let id = ran.request_id;
    let response = ran.response;
    let mut lines = vec![format!("START RequestId: {id} Version: {}", ran.version)];
    lines.extend(
        response
            .log
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.is_empty())
            // PostgreSQL's TEXT cannot hold NUL.
            .map(|line| line.replace('\0', "\u{FFFD}")),
    );
    lines.push(format!("END RequestId: {id}"));
    let mut report = format!(
        "REPORT RequestId: {id}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB\t\
         Max Memory Used: {} MB",
        millis(response.duration_us),
        response.duration_us.div_ceil(1000).max(1),
        ran.memory_mib,
        response.max_memory_used_mib,
    );
    if let Some(init_us) = response.init_us {
        report.push_str(&format!("\tInit Duration: {} ms", millis(init_us)));
    }
    lines.push(report);
    lines
}

/// Microseconds as milliseconds with two decimals, as `REPORT` shows durations.
fn millis(us: u64) -> String {
    format!("{}.{:02}", us / 1000, us % 1000 / 10)
}

/// The log as one text, a line each (what `LogType: Tail` shows the end of).
pub fn text(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The last `max` bytes of `text`, starting at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Lambda's stream name: the day, the version and the environment (here the worker and
/// the environment's number on it).
pub fn stream_name(at: DateTime<Utc>, version: &str, worker_id: &str, environment: u64) -> String {
    format!(
        "{}/[{version}]{worker_id}-{environment}",
        at.format("%Y/%m/%d")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_fleet::messages::Status;

    fn worker_response(log: &str, duration_us: u64, init_us: Option<u64>) -> InvokeResponse {
        InvokeResponse {
            status: Status::Success,
            payload: String::new(),
            error_type: None,
            log_tail: String::new(),
            log: log.to_owned(),
            environment: 3,
            duration_us,
            init_us,
            max_memory_used_mib: 20,
        }
    }

    #[test]
    fn formats_lambdas_start_end_and_report_lines() {
        let response = worker_response(
            "init done\r\nhello: greeting \"Ada\"\n\nbye\0",
            12_345,
            Some(3_210),
        );
        let ran = Ran {
            request_id: "r-1",
            version: "$LATEST",
            memory_mib: 128,
            worker_id: "w-1",
            response: &response,
        };
        assert_eq!(
            lines(&ran),
            [
                "START RequestId: r-1 Version: $LATEST",
                "init done",
                "hello: greeting \"Ada\"",
                "bye\u{FFFD}",
                "END RequestId: r-1",
                "REPORT RequestId: r-1\tDuration: 12.34 ms\tBilled Duration: 13 ms\t\
                 Memory Size: 128 MB\tMax Memory Used: 20 MB\tInit Duration: 3.21 ms",
            ]
        );
        // Warm: no Init Duration; a sub-millisecond run bills 1 ms.
        let warm = worker_response("", 250, None);
        let ran = Ran {
            response: &warm,
            version: "2",
            ..ran
        };
        let lines = lines(&ran);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            "REPORT RequestId: r-1\tDuration: 0.25 ms\tBilled Duration: 1 ms\t\
             Memory Size: 128 MB\tMax Memory Used: 20 MB"
        );
        assert!(text(&lines).ends_with("Max Memory Used: 20 MB\n"));
    }

    #[test]
    fn tails_end_on_the_text_and_start_on_a_character() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 2), "ef");
        // 'é' is two bytes: a cut through it moves past it.
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn names_streams_by_day_version_and_environment() {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap(); // 2026-01-01
        assert_eq!(
            stream_name(at, "$LATEST", "w-0123456789abcdef", 7),
            "2026/01/01/[$LATEST]w-0123456789abcdef-7"
        );
    }
}
