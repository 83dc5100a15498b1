//! Account and artifact ids become file names and token fields, so they are restricted to a
//! small alphabet before anything touches the file system: `[A-Za-z0-9_-]`, 1 to 64
//! characters. That rules out `/`, `..`, dots (used as separators in grant tokens) and
//! anything a shell or URL would need to escape.

/// The longest id accepted.
/// The qualifier of a function's unpublished, editable version.
pub const LATEST: &str = "$LATEST";

pub const MAX_LEN: usize = 64;

/// An account or artifact id outside the accepted alphabet or length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} {value:?}: expected 1 to {MAX_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"
)]
pub struct InvalidName {
    /// What the value was meant to be ("account" or "artifact id").
    pub what: &'static str,
    pub value: String,
}

/// Checks an account id.
pub fn check_account(value: &str) -> Result<(), InvalidName> {
    check("account", value)
}

/// Checks an artifact id.
pub fn check_artifact(value: &str) -> Result<(), InvalidName> {
    check("artifact id", value)
}

fn check(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let ok = (1..=MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_only() {
        for ok in ["123456789012", "fn_A-1", "a", &"x".repeat(MAX_LEN)] {
            assert_eq!(check_account(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a.b",
            "a\\b",
            "a\0",
            "é",
            " a",
            &"x".repeat(MAX_LEN + 1),
        ] {
            let err = check_artifact(bad).unwrap_err();
            assert_eq!(err.what, "artifact id");
            assert_eq!(err.value, bad);
        }
    }
}
