//! The JSON shapes of the functions API, named and nested as in Lambda's model
//! (botocore's `lambda/2015-03-31`). Requests ignore members they do not know, so clients
//! that send more of Lambda's options still work; responses carry what ember has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::target;
use ember_store::functions::Version;

/// CreateFunction's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<FunctionCode>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    #[serde(default)]
    pub publish: bool,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
}

/// Lambda's `FunctionCode`: only `ZipFile` is supported, the rest is read to refuse it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    /// Base64, as the JSON protocol sends blobs.
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

/// Lambda's `Environment`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    pub variables: Option<BTreeMap<String, String>>,
}

/// UpdateFunctionCode's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest {
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub dry_run: bool,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

/// UpdateFunctionConfiguration's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub runtime: Option<String>,
    pub revision_id: Option<String>,
}

/// PublishVersion's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

/// Lambda's `FunctionConfiguration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: i64,
    pub description: String,
    pub timeout: i64,
    pub memory_size: i64,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub revision_id: String,
    pub state: &'static str,
    pub last_update_status: &'static str,
    pub package_type: &'static str,
    pub architectures: [&'static str; 1],
}

impl FunctionConfiguration {
    /// `version` as Lambda shows it, its ARN qualified with `qualifier` (the version
    /// itself, or the alias or `$LATEST` the request named) or not at all.
    pub fn of(version: Version, region: &str, qualifier: Option<&str>) -> FunctionConfiguration {
        let config = version.config;
        FunctionConfiguration {
            function_arn: target::function_arn(
                region,
                &version.account_id,
                &version.function_name,
                qualifier,
            ),
            function_name: version.function_name,
            runtime: config.runtime,
            role: config.role,
            handler: config.handler,
            code_size: version.code.code_size,
            description: config.description,
            timeout: config.timeout,
            memory_size: config.memory_size,
            last_modified: version.last_modified,
            code_sha256: version.code.code_sha256,
            version: version.version,
            environment: (!config.environment.is_empty()).then_some(Environment {
                variables: Some(config.environment),
            }),
            revision_id: version.revision_id,
            state: "Active",
            last_update_status: "Successful",
            package_type: "Zip",
            architectures: ["x86_64"],
        }
    }
}

/// GetFunction's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunctionResponse {
    pub configuration: FunctionConfiguration,
    pub code: FunctionCodeLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// Lambda's `FunctionCodeLocation`. Lambda gives a pre-signed S3 URL of the uploaded ZIP;
/// ember keeps only the validated module, encrypted, so `Location` downloads that module
/// (see [`crate::api::download`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCodeLocation {
    pub repository_type: &'static str,
    pub location: String,
}

/// Lambda's `Concurrency`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Concurrency {
    pub reserved_concurrent_executions: i64,
}

/// ListFunctions' response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctionsResponse {
    pub functions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ListVersionsByFunction's response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListVersionsResponse {
    pub versions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// The query strings of the Lambda API (each operation reads its own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionsQuery {
    pub qualifier: Option<String>,
    pub marker: Option<String>,
    pub max_items: Option<String>,
    pub function_version: Option<String>,
    pub list: Option<String>,
}
