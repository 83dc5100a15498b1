//! Which function a request names. Lambda accepts a function by name (`my-function`), by
//! name and qualifier (`my-function:v1`), by full ARN
//! (`arn:aws:lambda:local:123456789012:function:my-function[:v1]`) or by partial ARN
//! (`123456789012:function:my-function[:v1]`). An ARN of another account or region names
//! no function of the caller's: not found, never another account's.

use crate::api::error::ApiError;
use crate::service::Principal;

/// The mutable version's name.
pub use ember_core::names::LATEST;

/// Longest function name.
const MAX_NAME: usize = 64;

/// Longest qualifier (version or alias name).
const MAX_QUALIFIER: usize = 128;

/// A function named in a request, inside the caller's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    /// A version or alias given inside the name or ARN.
    pub qualifier: Option<String>,
}

/// Parses a `FunctionName` (path parameter or body field) for `principal` in `region`.
pub fn parse(value: &str, principal: &Principal, region: &str) -> Result<FunctionRef, ApiError> {
    let bad = || {
        ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{value}' at 'functionName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             (arn:aws:lambda:)?([a-z0-9-]+:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
        ))
    };
    let parts: Vec<&str> = value.split(':').collect();
    let (account, rest): (Option<&str>, &[&str]) = match parts.as_slice() {
        ["arn", "aws", "lambda", arn_region, account, "function", rest @ ..] => {
            if *arn_region != region {
                return Err(not_found(value));
            }
            (Some(account), rest)
        }
        [account, "function", rest @ ..] => (Some(account), rest),
        rest => (None, rest),
    };
    let (name, qualifier) = match rest {
        [name] => (*name, None),
        [name, qualifier] => (*name, Some(*qualifier)),
        _ => return Err(bad()),
    };
    if let Some(account) = account {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if account != principal.account_id {
            return Err(not_found(value));
        }
    }
    check_name(name).map_err(|_| bad())?;
    if let Some(qualifier) = qualifier {
        check_qualifier(qualifier).map_err(|_| bad())?;
    }
    Ok(FunctionRef {
        name: name.to_owned(),
        qualifier: qualifier.map(str::to_owned),
    })
}

/// Checks a function name as created: 1 to 64 of `[a-zA-Z0-9-_]`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if (1..=MAX_NAME).contains(&name.len()) && name.bytes().all(is_name_byte) {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy \
             constraint: Member must have length between 1 and {MAX_NAME} and contain only \
             letters, digits, '-' and '_'"
        )))
    }
}

/// Checks a qualifier: `$LATEST`, a version number or an alias name.
pub fn check_qualifier(qualifier: &str) -> Result<(), ApiError> {
    let ok = qualifier == LATEST
        || ((1..=MAX_QUALIFIER).contains(&qualifier.len()) && qualifier.bytes().all(is_name_byte));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
        )))
    }
}

/// The function's ARN, with `qualifier` appended when given.
pub fn function_arn(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn not_found(value: &str) -> ApiError {
    ApiError::not_found(format!("Function not found: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Principal {
        Principal {
            account_id: "123456789012".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            role: None,
        }
    }

    #[test]
    fn accepts_every_form_lambda_does() {
        let p = caller();
        let plain = FunctionRef {
            name: "f-1_x".into(),
            qualifier: None,
        };
        let qualified = FunctionRef {
            name: "f-1_x".into(),
            qualifier: Some("live".into()),
        };
        assert_eq!(parse("f-1_x", &p, "local").unwrap(), plain);
        assert_eq!(parse("f-1_x:live", &p, "local").unwrap(), qualified);
        assert_eq!(
            parse(
                "arn:aws:lambda:local:123456789012:function:f-1_x",
                &p,
                "local"
            )
            .unwrap(),
            plain
        );
        assert_eq!(
            parse("123456789012:function:f-1_x:live", &p, "local").unwrap(),
            qualified
        );
        assert_eq!(
            parse("f:$LATEST", &p, "local")
                .unwrap()
                .qualifier
                .as_deref(),
            Some(LATEST)
        );
    }

    #[test]
    fn another_account_or_region_is_not_found() {
        let p = caller();
        for other in [
            "arn:aws:lambda:local:999999999999:function:f",
            "999999999999:function:f",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
        ] {
            assert_eq!(
                parse(other, &p, "local").unwrap_err().status,
                404,
                "{other}"
            );
        }
    }

    #[test]
    fn malformed_names_are_invalid_parameters() {
        let p = caller();
        let long = "x".repeat(65);
        for bad in [
            "",
            "a b",
            "a/b",
            "a:b:c",
            "f:",
            ":f",
            "f:$NOPE",
            &long,
            "12:function:f",
        ] {
            let err = parse(bad, &p, "local").unwrap_err();
            assert_eq!(err.kind, "InvalidParameterValueException", "{bad:?}");
        }
    }
}
