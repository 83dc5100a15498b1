"""Invoke through boto3 against ember-control with one emberd worker: versions and
weighted aliases, function errors, log tails, metadata and credentials, throttling and
the payload limit. Run by control/tests/invoke_e2e.rs; exits non-zero on the first
mismatch.

usage: invoke_boto3.py ENDPOINT CA_PEM CREDENTIALS_FILE ZIP_DIR ACCOUNT

ZIP_DIR holds hello.zip, counter.zip, trap.zip, loop.zip and env-reader.zip.
"""

import base64
import collections
import json
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA, CREDENTIALS, ZIP_DIR, ACCOUNT = sys.argv[1:6]
ROLE = f"arn:aws:iam::{ACCOUNT}:role/invoker"

os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CREDENTIALS
lam = boto3.session.Session(profile_name="ember", region_name="local").client(
    "lambda",
    endpoint_url=ENDPOINT,
    verify=CA,
    # One attempt: a throttle or a failure must show, not be retried away.
    config=botocore.config.Config(retries={"total_max_attempts": 1}),
)


def package(name):
    with open(os.path.join(ZIP_DIR, name), "rb") as f:
        return f.read()


def create(name, zip_name, **extra):
    lam.create_function(
        FunctionName=name,
        Runtime="wasm32-wasip1",
        Role=ROLE,
        Code={"ZipFile": package(zip_name)},
        **extra,
    )


def invoke(name, payload=b"{}", **extra):
    reply = lam.invoke(FunctionName=name, Payload=payload, **extra)
    reply["Body"] = reply["Payload"].read()
    return reply


def expect_error(code, status, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == (code, status), f"expected {code}/{status}, got {got}: {e}"
        return e
    raise AssertionError(f"{args}{kwargs} succeeded; expected {code}")


# Versions: 1 is hello, 2 is counter.
create("multi", "hello.zip", Publish=True)
lam.update_function_code(FunctionName="multi", ZipFile=package("counter.zip"), Publish=True)
one = invoke("multi", b'{"name":"Ada"}', Qualifier="1")
assert one["ExecutedVersion"] == "1", one
assert json.loads(one["Body"]) == {"message": "Hello, Ada!"}, one["Body"]
two = invoke("multi:2")
assert two["ExecutedVersion"] == "2", two
assert "count" in json.loads(two["Body"]), two["Body"]
assert invoke("multi")["ExecutedVersion"] == "$LATEST"

# A weighted alias: weight 0 never routes to the additional version...
lam.create_alias(
    FunctionName="multi",
    Name="live",
    FunctionVersion="1",
    RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}},
)
ran = collections.Counter(invoke("multi", Qualifier="live")["ExecutedVersion"] for _ in range(20))
assert ran == {"1": 20}, ran
# ...and 0.5 sends about half there.
lam.update_alias(
    FunctionName="multi",
    Name="live",
    RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
)
ran = collections.Counter(invoke("multi:live")["ExecutedVersion"] for _ in range(200))
assert set(ran) == {"1", "2"} and min(ran.values()) >= 60, ran

# A trap is a function error: 200, FunctionError, Lambda's error object; the tail has
# the log.
create("trap", "trap.zip")
failed = invoke("trap", LogType="Tail")
assert failed["StatusCode"] == 200, failed
assert failed["FunctionError"] == "Unhandled", failed
error = json.loads(failed["Body"])
assert error["errorType"] == "Runtime.Trap", error
assert error["errorMessage"], error
assert "LogResult" in failed, failed

# A timeout stops the function at its limit.
create("loop", "loop.zip", Timeout=1)
timed_out = invoke("loop")
assert timed_out["FunctionError"] == "Unhandled", timed_out
error = json.loads(timed_out["Body"])
assert error["errorType"] == "Sandbox.Timedout", error
assert error["errorMessage"] == "Task timed out after 1.00 seconds", error

# The function sees its variables, Lambda's metadata and its role's credentials.
create(
    "env",
    "env-reader.zip",
    MemorySize=256,
    Environment={"Variables": {"STAGE": "test"}},
)
env = json.loads(invoke("env")["Body"])
assert env["STAGE"] == "test", env
assert env["AWS_LAMBDA_FUNCTION_NAME"] == "env", env
assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST", env
assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256", env
assert env["AWS_REGION"] == "local", env
assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA"), env
assert env["AWS_SECRET_ACCESS_KEY"] and env["AWS_SESSION_TOKEN"], env
# Those credentials act for the function's account, as its role.
as_role = boto3.session.Session(
    aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    aws_session_token=env["AWS_SESSION_TOKEN"],
    region_name="local",
).client("lambda", endpoint_url=ENDPOINT, verify=CA)
assert as_role.get_function(FunctionName="env")["Configuration"]["FunctionName"] == "env"

# The log tail is the base64 of the log's end.
tail = invoke("multi:1", b'{"name":"Tail"}', LogType="Tail")
assert b'greeting "Tail"' in base64.b64decode(tail["LogResult"]), tail

# DryRun checks only that the caller may invoke it.
assert lam.invoke(FunctionName="multi", InvocationType="DryRun")["StatusCode"] == 204
expect_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="absent")
expect_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="multi", Qualifier="9")
# Event invocations are queued (control/tests/invoke_events.rs follows them).
assert lam.invoke(FunctionName="multi", InvocationType="Event")["StatusCode"] == 202

# Reserved concurrency 0 throttles every invocation.
lam.put_function_concurrency(FunctionName="trap", ReservedConcurrentExecutions=0)
throttled = expect_error("TooManyRequestsException", 429, lam.invoke, FunctionName="trap")
assert throttled.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded", \
    throttled.response
lam.delete_function_concurrency(FunctionName="trap")
assert invoke("trap")["FunctionError"] == "Unhandled"

# 6 MiB in.
expect_error("RequestTooLargeException", 413, lam.invoke, FunctionName="multi",
             Payload=b"x" * (6 * 1024 * 1024 + 1))

print("ok")
