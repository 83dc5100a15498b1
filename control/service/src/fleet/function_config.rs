//! What a worker is told about a function version: [`FunctionConfig`]. Its
//! [`VersionKey`] decides which environments are interchangeable, so its digest covers
//! everything an environment is built from: the code (by artifact id: an id names one
//! immutable module, which stands in for the module's own hash), the handler, memory,
//! timeout and the environment variables, Lambda's metadata included. Role credentials are
//! left out: they rotate, and travel with each invocation instead.

use std::collections::BTreeMap;

use ember_fleet::messages::{CodeRef, FunctionConfig, VersionKey};
use sha2::{Digest, Sha256};

use ember_store::functions::Version;

/// How long a worker's code grant lasts: enough to fetch the code at the start of the
/// invocation or provisioning it came with.
pub const GRANT_LIFETIME: u64 = 300;

/// The environment `version` runs with: its variables plus Lambda's metadata.
pub fn environment(version: &Version, region: &str) -> BTreeMap<String, String> {
    let mut env = version.config.environment.clone();
    let name = &version.function_name;
    for (key, value) in [
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", version.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            version.config.memory_size.to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
    ] {
        env.insert(key.to_owned(), value);
    }
    env
}

/// The configuration of `version` for a worker, with `grant` to fetch its code.
pub fn function_config(version: &Version, region: &str, grant: String) -> FunctionConfig {
    let environment = environment(version, region);
    let memory_mib = u32::try_from(version.config.memory_size).unwrap_or(u32::MAX);
    let timeout_ms = u64::try_from(version.config.timeout)
        .unwrap_or(0)
        .saturating_mul(1000);
    let digest = config_digest(
        &version.code.artifact_id,
        &version.config.handler,
        memory_mib,
        timeout_ms,
        &environment,
    );
    FunctionConfig {
        key: VersionKey {
            account: version.account_id.clone(),
            function: version.function_name.clone(),
            version: version.version.clone(),
            config_digest: digest,
        },
        code: CodeRef {
            account: version.account_id.clone(),
            artifact_id: version.code.artifact_id.clone(),
            grant,
        },
        handler: version.config.handler.clone(),
        memory_mib,
        timeout_ms,
        environment,
    }
}

/// SHA-256 (hex) over every part, each length-prefixed so no two settings collide.
fn config_digest(
    artifact_id: &str,
    handler: &str,
    memory_mib: u32,
    timeout_ms: u64,
    environment: &BTreeMap<String, String>,
) -> String {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(artifact_id.as_bytes());
    part(handler.as_bytes());
    part(&memory_mib.to_le_bytes());
    part(&timeout_ms.to_le_bytes());
    for (key, value) in environment {
        part(key.as_bytes());
        part(value.as_bytes());
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_store::functions::{Code, Config};
    use ember_wire::function::ModuleKind;

    fn version() -> Version {
        Version {
            account_id: "123456789012".into(),
            function_name: "hello".into(),
            version: "3".into(),
            seq: 3,
            config: Config {
                description: String::new(),
                runtime: "wasm32-wasip1".into(),
                handler: "handle".into(),
                role: "arn:aws:iam::123456789012:role/r".into(),
                memory_size: 256,
                timeout: 10,
                environment: [("STAGE".to_owned(), "prod".to_owned())].into(),
            },
            code: Code {
                kind: ModuleKind::Reactor,
                code_sha256: "zip".into(),
                code_size: 10,
                artifact_id: "art1".into(),
            },
            last_modified: String::new(),
            revision_id: String::new(),
        }
    }

    #[test]
    fn carries_metadata_and_digests_every_setting() {
        let v = version();
        let config = function_config(&v, "local", "grant".into());
        assert_eq!(config.environment["STAGE"], "prod");
        assert_eq!(config.environment["AWS_LAMBDA_FUNCTION_NAME"], "hello");
        assert_eq!(config.environment["AWS_LAMBDA_FUNCTION_VERSION"], "3");
        assert_eq!(config.environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(config.environment["AWS_REGION"], "local");
        assert_eq!((config.memory_mib, config.timeout_ms), (256, 10_000));
        assert_eq!(config.key.config_digest.len(), 64);
        // The grant changes per invocation; the key does not.
        let again = function_config(&v, "local", "another grant".into());
        assert_eq!(config.key, again.key);

        let mut changes: Vec<Version> = Vec::new();
        for change in 0..4 {
            let mut other = version();
            match change {
                0 => other.code.artifact_id = "art2".into(),
                1 => other.config.memory_size = 512,
                2 => other.config.timeout = 11,
                _ => {
                    other
                        .config
                        .environment
                        .insert("STAGE".into(), "dev".into());
                }
            }
            changes.push(other);
        }
        for other in changes {
            let key = function_config(&other, "local", "grant".into()).key;
            assert_ne!(key.config_digest, config.key.config_digest);
        }
    }
}
