"""The Lambda API lifecycle through boto3, the stock AWS SDK for Python, against a running
ember-control. Run by control/tests/aws_clients.rs; exits non-zero on the first mismatch.

usage: lambda_boto3.py ENDPOINT CA_PEM CREDENTIALS_FILE OTHER_PROFILE ZIP_DIR

ZIP_DIR holds hello.zip, counter.zip, echo.zip (valid packages), not-a-zip.zip,
no-module.zip and bad-wasm.zip.
"""

import base64
import hashlib
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA, CREDENTIALS, OTHER_PROFILE, ZIP_DIR = sys.argv[1:6]
ROLE = "arn:aws:iam::123456789012:role/ember-test"
RUNTIME = "wasm32-wasip1"


def client(profile):
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CREDENTIALS
    session = boto3.session.Session(profile_name=profile, region_name="local")
    return session.client(
        "lambda",
        endpoint_url=ENDPOINT,
        verify=CA,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def package(name):
    with open(os.path.join(ZIP_DIR, name), "rb") as f:
        return f.read()


def sha(zip_bytes):
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def expect_error(code, status, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == (code, status), f"{call.__name__}: expected {code}/{status}, got {got}: {e}"
        assert e.response["Error"]["Message"], f"{code} without a message"
        return e
    raise AssertionError(f"{call.__name__}{args}{kwargs} succeeded; expected {code}")


lam = client("ember")
other = client(OTHER_PROFILE)
hello, counter = package("hello.zip"), package("counter.zip")

# Create and read back.
created = lam.create_function(
    FunctionName="hello",
    Runtime=RUNTIME,
    Role=ROLE,
    Handler="handle",
    Code={"ZipFile": hello},
    Environment={"Variables": {"GREETING": "hi"}},
)
assert created["ResponseMetadata"]["HTTPStatusCode"] == 201, created
assert created["FunctionName"] == "hello"
assert created["Version"] == "$LATEST"
assert created["MemorySize"] == 128 and created["Timeout"] == 3, created
assert created["CodeSha256"] == sha(hello), (created["CodeSha256"], sha(hello))
assert created["CodeSize"] == len(hello)
assert created["State"] == "Active"
assert created["FunctionArn"].endswith(":function:hello"), created["FunctionArn"]
assert created["Environment"]["Variables"] == {"GREETING": "hi"}

got = lam.get_function(FunctionName="hello")
assert got["Configuration"]["CodeSha256"] == sha(hello)
config = lam.get_function_configuration(FunctionName=created["FunctionArn"])
assert config["RevisionId"] == created["RevisionId"]
expect_error(
    "ResourceConflictException", 409, lam.create_function,
    FunctionName="hello", Runtime=RUNTIME, Role=ROLE, Code={"ZipFile": hello},
)

# Paging: every function exactly once, page by page.
for i in range(11):
    lam.create_function(
        FunctionName=f"page-{i:02}", Runtime=RUNTIME, Role=ROLE, Code={"ZipFile": hello}
    )
names = []
for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 5}):
    assert len(page["Functions"]) <= 5
    names += [f["FunctionName"] for f in page["Functions"]]
assert sorted(names) == sorted(["hello"] + [f"page-{i:02}" for i in range(11)]), names
assert len(names) == len(set(names)), names

# Code and configuration updates, then versions: published ones are frozen.
updated = lam.update_function_code(FunctionName="hello", ZipFile=counter)
assert updated["CodeSha256"] == sha(counter)
v1 = lam.publish_version(FunctionName="hello", Description="first")
assert v1["Version"] == "1" and v1["CodeSha256"] == sha(counter), v1
again = lam.publish_version(FunctionName="hello")
assert again["Version"] == "1", "publishing an unchanged $LATEST must not add a version"
lam.update_function_configuration(
    FunctionName="hello", MemorySize=256, Timeout=10, Environment={"Variables": {"AB": "1"}}
)
lam.update_function_code(FunctionName="hello", ZipFile=hello)
v2 = lam.publish_version(FunctionName="hello")
assert v2["Version"] == "2" and v2["MemorySize"] == 256 and v2["CodeSha256"] == sha(hello)
frozen = lam.get_function_configuration(FunctionName="hello", Qualifier="1")
assert frozen["CodeSha256"] == sha(counter) and frozen["MemorySize"] == 128, frozen
versions = [
    v["Version"]
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName="hello")
    for v in page["Versions"]
]
assert versions == ["$LATEST", "1", "2"], versions
expect_error(
    "PreconditionFailedException", 412, lam.update_function_configuration,
    FunctionName="hello", Timeout=5, RevisionId="00000000-0000-0000-0000-000000000000",
)

# Aliases with weighted routing.
alias = lam.create_alias(
    FunctionName="hello", Name="live", FunctionVersion="1",
    RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
)
assert alias["AliasArn"].endswith(":function:hello:live"), alias
assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.25}
lam.update_alias(FunctionName="hello", Name="live", FunctionVersion="2", RoutingConfig={})
assert lam.get_alias(FunctionName="hello", Name="live")["FunctionVersion"] == "2"
lam.create_alias(FunctionName="hello", Name="canary", FunctionVersion="1")
aliases = [a["Name"] for a in lam.list_aliases(FunctionName="hello")["Aliases"]]
assert sorted(aliases) == ["canary", "live"], aliases
expect_error(
    "InvalidParameterValueException", 400, lam.create_alias,
    FunctionName="hello", Name="heavy", FunctionVersion="1",
    RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}},
)
expect_error(
    "ResourceNotFoundException", 404, lam.create_alias,
    FunctionName="hello", Name="ghost", FunctionVersion="9",
)
by_alias = lam.get_function_configuration(FunctionName="hello", Qualifier="canary")
assert by_alias["Version"] == "1", by_alias
expect_error("ResourceConflictException", 409, lam.delete_function, FunctionName="hello", Qualifier="1")

# Reserved and provisioned concurrency.
assert lam.put_function_concurrency(
    FunctionName="hello", ReservedConcurrentExecutions=10
)["ReservedConcurrentExecutions"] == 10
assert lam.get_function_concurrency(FunctionName="hello")["ReservedConcurrentExecutions"] == 10
assert lam.get_function(FunctionName="hello")["Concurrency"]["ReservedConcurrentExecutions"] == 10
pc = lam.put_provisioned_concurrency_config(
    FunctionName="hello", Qualifier="live", ProvisionedConcurrentExecutions=2
)
assert pc["ResponseMetadata"]["HTTPStatusCode"] == 202, pc
assert pc["RequestedProvisionedConcurrentExecutions"] == 2
got = lam.get_provisioned_concurrency_config(FunctionName="hello", Qualifier="live")
assert got["RequestedProvisionedConcurrentExecutions"] == 2
listed = lam.list_provisioned_concurrency_configs(FunctionName="hello")
assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed["ProvisionedConcurrencyConfigs"]] == ["live"]
expect_error(
    "InvalidParameterValueException", 400, lam.put_provisioned_concurrency_config,
    FunctionName="hello", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1,
)
lam.delete_provisioned_concurrency_config(FunctionName="hello", Qualifier="live")
expect_error(
    "ProvisionedConcurrencyConfigNotFoundException", 404,
    lam.get_provisioned_concurrency_config, FunctionName="hello", Qualifier="live",
)
lam.delete_function_concurrency(FunctionName="hello")
assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="hello")

# Bad input: each with the error type and status Lambda's clients expect.
def create(**overrides):
    args = dict(FunctionName="bad", Runtime=RUNTIME, Role=ROLE, Code={"ZipFile": hello})
    args.update(overrides)
    return lam.create_function(**args)


for overrides in [
    {"FunctionName": "no spaces allowed"},
    {"FunctionName": "x" * 65},
    {"MemorySize": 129},
    {"MemorySize": 4096},
    {"Timeout": 901},
    {"Runtime": "python3.12"},
    {"Role": "not-a-role"},
    {"Code": {"ZipFile": package("not-a-zip.zip")}},
    {"Code": {"ZipFile": package("no-module.zip")}},
    {"Code": {"ZipFile": package("bad-wasm.zip")}},
]:
    expect_error("InvalidParameterValueException", 400, create, **overrides)
expect_error("RequestTooLargeException", 413, create, Code={"ZipFile": os.urandom(51 << 20)})
expect_error("ResourceNotFoundException", 404, lam.get_function, FunctionName="bad")

# Tenancy: another account sees none of this account's functions.
assert other.list_functions()["Functions"] == []
arn = created["FunctionArn"]
for call, kwargs in [
    (other.get_function, {"FunctionName": "hello"}),
    (other.get_function, {"FunctionName": arn}),
    (other.update_function_code, {"FunctionName": "hello", "ZipFile": hello}),
    (other.delete_function, {"FunctionName": arn}),
    (other.get_alias, {"FunctionName": arn, "Name": "live"}),
]:
    expect_error("ResourceNotFoundException", 404, call, **kwargs)

# Deleting: a version once no alias points to it, then the whole function.
lam.delete_alias(FunctionName="hello", Name="canary")
lam.delete_function(FunctionName="hello", Qualifier="1")
expect_error(
    "ResourceNotFoundException", 404, lam.get_function, FunctionName="hello", Qualifier="1"
)
lam.delete_function(FunctionName="hello")
expect_error("ResourceNotFoundException", 404, lam.get_function, FunctionName="hello")
expect_error("ResourceNotFoundException", 404, lam.get_alias, FunctionName="hello", Name="live")
print("boto3 lifecycle: ok")
