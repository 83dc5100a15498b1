//! Checks of a function's settings, shared by CreateFunction and
//! UpdateFunctionConfiguration. Limits are Lambda's except where ember's micro-VMs differ
//! (memory), and messages read like Lambda's so tools that match on them keep working.

use std::collections::BTreeMap;

use crate::api::error::ApiError;
use crate::api::shapes::Environment;
use ember_core::module;

/// The one runtime: WebAssembly modules for WASI preview 1.
pub const RUNTIME: &str = "wasm32-wasip1";

pub const DEFAULT_TIMEOUT: i64 = 3;
const MAX_TIMEOUT: i64 = 900;

pub const DEFAULT_MEMORY: i64 = 128;
const MIN_MEMORY: i64 = 128;
/// The memory size becomes the micro-VM's RAM, which must end below the device window:
/// 3328 MiB rather than Lambda's 10240.
const MAX_MEMORY: i64 = (ember_wire::layout::MAX_MEMORY >> 20) as i64;

const MAX_DESCRIPTION: usize = 256;
const MAX_HANDLER: usize = 128;
const MAX_ROLE: usize = 2048;

/// Lambda's limit on all variables together, measured as their JSON.
const MAX_ENVIRONMENT: usize = 4096;

/// Variables the platform sets for every function (the role's credentials among them),
/// which a function's configuration may not override.
const RESERVED_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
];

/// The runtime, [`RUNTIME`] when not given.
pub fn runtime(runtime: Option<String>) -> Result<String, ApiError> {
    match runtime {
        None => Ok(RUNTIME.to_owned()),
        Some(r) if r == RUNTIME => Ok(r),
        Some(r) => Err(ApiError::invalid_parameter(format!(
            "The runtime parameter of {r} is not supported: ember runs WebAssembly modules, \
             use {RUNTIME}."
        ))),
    }
}

/// The handler: for a reactor, the export invoked per event; empty means the default.
pub fn handler(handler: Option<String>) -> Result<String, ApiError> {
    let handler = handler.unwrap_or_default();
    if handler.is_empty() {
        return Ok(module::DEFAULT_HANDLER.to_owned());
    }
    if handler.chars().count() > MAX_HANDLER || handler.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{handler}' at 'handler' failed to satisfy \
             constraint: Member must have length less than or equal to {MAX_HANDLER} and \
             satisfy regular expression pattern: [^\\s]+"
        )));
    }
    Ok(handler)
}

/// An IAM role ARN. Its account is not checked against the caller's: the credentials a
/// function gets for its role are always scoped to the function's own account.
pub fn role(role: String) -> Result<String, ApiError> {
    if !is_role_arn(&role) {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{role}' at 'role' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
        )));
    }
    Ok(role)
}

pub fn description(description: String) -> Result<String, ApiError> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value at 'description' failed to satisfy \
             constraint: Member must have length less than or equal to {MAX_DESCRIPTION}"
        )));
    }
    Ok(description)
}

/// Seconds, 1 to 900.
pub fn timeout(timeout: i64) -> Result<i64, ApiError> {
    in_range(timeout, 1, MAX_TIMEOUT, "timeout")
}

/// MiB: 128 up to what a micro-VM can have, in whole pairs (guest memory is mapped in
/// 2 MiB pages).
pub fn memory_size(memory: i64) -> Result<i64, ApiError> {
    in_range(memory, MIN_MEMORY, MAX_MEMORY, "memorySize")?;
    if memory % 2 != 0 {
        return Err(ApiError::invalid_parameter(format!(
            "MemorySize must be an even number of MB between {MIN_MEMORY} and {MAX_MEMORY} \
             (got {memory})"
        )));
    }
    Ok(memory)
}

/// Variables subject `[a-zA-Z][a-zA-Z0-9_]+`, none reserved, at most 4 KB together.
pub fn environment(environment: Option<Environment>) -> Result<BTreeMap<String, String>, ApiError> {
    let variables = environment.and_then(|e| e.variables).unwrap_or_default();
    for key in variables.keys() {
        let mut bytes = key.bytes();
        let valid = key.len() >= 2
            && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value '{key}' at 'environment.variables' failed \
                 to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy \
                 regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
            )));
        }
    }
    let reserved: Vec<&str> = variables
        .keys()
        .map(String::as_str)
        .filter(|key| RESERVED_VARIABLES.contains(key))
        .collect();
    if !reserved.is_empty() {
        return Err(ApiError::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the \
             environment variables you have provided contains reserved keys that are \
             currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    let size = serde_json::to_string(&variables).map_or(usize::MAX, |json| json.len());
    if size > MAX_ENVIRONMENT {
        return Err(ApiError::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the \
             environment variables you have provided exceeded the 4KB limit ({size} bytes)."
        )));
    }
    Ok(variables)
}

/// `PackageType`, if given, must be `Zip`: ember runs no container images.
pub fn package_type(package_type: Option<&str>) -> Result<(), ApiError> {
    match package_type {
        None | Some("Zip") => Ok(()),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "PackageType {other} is not supported: ember functions are Zip packages"
        ))),
    }
}

/// `Architectures`, if given, must be `["x86_64"]`: workers are x86-64 machines.
pub fn architectures(architectures: Option<&[String]>) -> Result<(), ApiError> {
    match architectures {
        None => Ok(()),
        Some([one]) if one == "x86_64" => Ok(()),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "Architectures {other:?} are not supported: ember runs functions on [\"x86_64\"]"
        ))),
    }
}

fn in_range(value: i64, min: i64, max: i64, member: &str) -> Result<i64, ApiError> {
    let (relation, bound) = if value < min {
        ("greater than or equal to", min)
    } else if value > max {
        ("less than or equal to", max)
    } else {
        return Ok(value);
    };
    Err(ApiError::invalid_parameter(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must have value {relation} {bound}"
    )))
}

/// Whether `role` matches IAM's pattern for role ARNs,
/// `arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+`.
fn is_role_arn(role: &str) -> bool {
    let Some((partition, rest)) = role
        .strip_prefix("arn:")
        .and_then(|arn| arn.split_once(":iam::"))
    else {
        return false;
    };
    let partition_ok = partition.is_empty()
        || partition
            .strip_prefix("aws")
            .is_some_and(|tail| tail.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'));
    let Some((account, name)) = rest.split_once(":role") else {
        return false;
    };
    let name = name.strip_prefix('/').unwrap_or(name);
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_/".contains(&b));
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    role.len() <= MAX_ROLE && partition_ok && name_ok && account_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_follow_iam() {
        for ok in [
            "arn:aws:iam::123456789012:role/run",
            "arn:aws:iam::123456789012:role/service-role/a+b=c,d.e@f_g-h",
            "arn:aws-cn:iam::123456789012:role/x",
        ] {
            assert!(is_role_arn(ok), "{ok}");
        }
        for bad in [
            "",
            "role/x",
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:gcp:iam::123456789012:role/x",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
    }

    #[test]
    fn memory_fits_a_micro_vm() {
        assert_eq!(MAX_MEMORY, 3328);
        assert!(memory_size(128).is_ok() && memory_size(3328).is_ok());
        for bad in [0, 126, 129, 3330, 10240] {
            assert!(memory_size(bad).is_err(), "{bad}");
        }
    }
}
