//! The stock AWS clients against a running `ember-control`: the whole function lifecycle
//! through boto3 (tests/py/lambda_boto3.py) and through the AWS CLI.

use ember_testkit::{aws_error, write_packages, Control};

#[test]
fn boto3_drives_the_whole_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let credentials = control.add_account("other", dir.path());
    control.boto3_lifecycle(&credentials, "other", dir.path());
}

#[test]
fn aws_cli_drives_the_whole_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    write_packages(dir.path());
    let zip = |name: &str| format!("fileb://{}", dir.path().join(name).display());
    let role = "arn:aws:iam::123456789012:role/cli";

    let created = control.aws_json(&[
        "create-function",
        "--function-name",
        "greeter",
        "--runtime",
        "wasm32-wasip1",
        "--role",
        role,
        "--handler",
        "handle",
        "--memory-size",
        "256",
        "--timeout",
        "10",
        "--environment",
        "Variables={STAGE=test}",
        "--zip-file",
        &zip("hello.zip"),
    ]);
    assert_eq!(created["FunctionName"], "greeter");
    assert_eq!(created["MemorySize"], 256);
    assert_eq!(created["Environment"]["Variables"]["STAGE"], "test");

    let listed = control.aws_json(&["list-functions"]);
    let names: Vec<&str> = listed["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greeter"]);

    let updated = control.aws_json(&[
        "update-function-code",
        "--function-name",
        "greeter",
        "--zip-file",
        &zip("counter.zip"),
        "--publish",
    ]);
    assert_eq!(updated["Version"], "1");
    let config = control.aws_json(&[
        "update-function-configuration",
        "--function-name",
        "greeter",
        "--timeout",
        "30",
    ]);
    assert_eq!(config["Timeout"], 30);
    let v2 = control.aws_json(&["publish-version", "--function-name", "greeter"]);
    assert_eq!(v2["Version"], "2");
    assert_eq!(v2["Timeout"], 30);

    let alias = control.aws_json(&[
        "create-alias",
        "--function-name",
        "greeter",
        "--name",
        "prod",
        "--function-version",
        "1",
        "--routing-config",
        "AdditionalVersionWeights={2=0.1}",
    ]);
    assert_eq!(alias["RoutingConfig"]["AdditionalVersionWeights"]["2"], 0.1);
    let got = control.aws_json(&[
        "get-function",
        "--function-name",
        "greeter",
        "--qualifier",
        "prod",
    ]);
    assert_eq!(got["Configuration"]["Version"], "1");

    let reserved = control.aws_json(&[
        "put-function-concurrency",
        "--function-name",
        "greeter",
        "--reserved-concurrent-executions",
        "5",
    ]);
    assert_eq!(reserved["ReservedConcurrentExecutions"], 5);
    let provisioned = control.aws_json(&[
        "put-provisioned-concurrency-config",
        "--function-name",
        "greeter",
        "--qualifier",
        "prod",
        "--provisioned-concurrent-executions",
        "1",
    ]);
    assert_eq!(provisioned["RequestedProvisionedConcurrentExecutions"], 1);
    let versions = control.aws_json(&["list-versions-by-function", "--function-name", "greeter"]);
    assert_eq!(versions["Versions"].as_array().unwrap().len(), 3);

    // Errors come back with their Lambda type, which the CLI prints.
    let bad_memory = control.aws(&[
        "update-function-configuration",
        "--function-name",
        "greeter",
        "--memory-size",
        "4096",
    ]);
    assert_eq!(aws_error(&bad_memory), "InvalidParameterValueException");
    let missing = control.aws(&["get-function", "--function-name", "nope"]);
    assert_eq!(aws_error(&missing), "ResourceNotFoundException");
    let bad_zip = control.aws(&[
        "update-function-code",
        "--function-name",
        "greeter",
        "--zip-file",
        &zip("no-module.zip"),
    ]);
    assert_eq!(aws_error(&bad_zip), "InvalidParameterValueException");

    control.aws_json(&[
        "delete-alias",
        "--function-name",
        "greeter",
        "--name",
        "prod",
    ]);
    control.aws_json(&["delete-function", "--function-name", "greeter"]);
    let gone = control.aws(&["get-function", "--function-name", "greeter"]);
    assert_eq!(aws_error(&gone), "ResourceNotFoundException");
}
