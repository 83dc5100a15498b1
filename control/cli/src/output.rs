//! How results are printed: aligned tables and field lists for people, or the service's JSON
//! (for lists, every page merged into one array) for scripts with `--output json`.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::error::CliError;

/// The `--output` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and summaries
    #[default]
    Table,
    /// The service's JSON, pretty-printed
    Json,
}

impl Format {
    /// Prints `value` as JSON, or as `human` renders it. A `null` value (an empty response)
    /// prints nothing as JSON. A closed pipe (`ember … | head`) is not an error: the reader
    /// has what it wanted.
    pub fn print(
        self,
        value: &Value,
        human: impl FnOnce(&Value) -> String,
    ) -> Result<(), CliError> {
        let text = match self {
            Format::Json if value.is_null() => return Ok(()),
            Format::Json => serde_json::to_string_pretty(value).expect("JSON values serialize"),
            Format::Table => human(value),
        };
        if text.is_empty() {
            return Ok(());
        }
        match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            written => written.map_err(|e| CliError::file(Path::new("standard output"), e)),
        }
    }
}

/// A field of `value` as text: strings as they are, numbers and booleans written out,
/// `-` when absent or empty.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `label  value` lines with the values aligned; pairs whose value is `-` are left out.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, v)| v != "-").collect();
    let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| format!("{label:width$}  {value}\n"))
        .collect()
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The items of a JSON array (none for anything else): the rows of a list's table.
pub fn rows(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

/// A JSON object of strings to numbers or strings, as `k=v, k=v` (`-` when empty).
pub fn pairs(value: Option<&Value>) -> String {
    let Some(Value::Object(map)) = value else {
        return "-".to_owned();
    };
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_writes_out_any_field() {
        let v = json!({"s": "x", "n": 3, "b": true, "e": "", "z": null});
        assert_eq!(text(&v, "s"), "x");
        assert_eq!(text(&v, "n"), "3");
        assert_eq!(text(&v, "b"), "true");
        for missing in ["e", "z", "nope"] {
            assert_eq!(text(&v, missing), "-");
        }
    }

    #[test]
    fn fields_align_and_skip_empty_values() {
        let out = fields(&[
            ("Name", "f".into()),
            ("Description", "-".into()),
            ("Memory", "128 MiB".into()),
        ]);
        assert_eq!(out, "Name    f\nMemory  128 MiB\n");
    }

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let out = table(
            &["NAME", "VERSION"],
            &[
                vec!["hello-world".into(), "1".into()],
                vec!["f".into(), "$LATEST".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         VERSION\nhello-world  1\nf            $LATEST\n"
        );
    }

    #[test]
    fn pairs_list_maps() {
        assert_eq!(pairs(Some(&json!({"2": 0.25, "K": "v"}))), "2=0.25, K=v");
        assert_eq!(pairs(Some(&json!({}))), "-");
        assert_eq!(pairs(None), "-");
    }
}
