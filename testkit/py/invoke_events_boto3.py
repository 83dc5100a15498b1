"""Asynchronous invocations through boto3 against ember-control: InvocationType="Event"
answers 202 with an empty body, the request id names the event, and events over 256 KiB
are refused with RequestTooLargeException (413). Run by control/tests/invoke_events.rs
(which has created the function `hello`); prints the accepted event's request id, which
the test then finds in control's event table, and exits non-zero on the first mismatch.

usage: invoke_events_boto3.py ENDPOINT CA_PEM CREDENTIALS_FILE
"""

import json
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA, CREDENTIALS = sys.argv[1:4]
LIMIT = 256 * 1024

os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CREDENTIALS
lam = boto3.session.Session(profile_name="ember", region_name="local").client(
    "lambda",
    endpoint_url=ENDPOINT,
    verify=CA,
    # One attempt: a refusal must show, not be retried away.
    config=botocore.config.Config(retries={"total_max_attempts": 1}),
)

reply = lam.invoke(
    FunctionName="hello",
    InvocationType="Event",
    Payload=json.dumps({"name": "boto3"}).encode(),
)
assert reply["StatusCode"] == 202, reply
assert reply["Payload"].read() == b"", "an Event answer has no body"
request_id = reply["ResponseMetadata"]["RequestId"]
assert request_id, reply

try:
    lam.invoke(FunctionName="hello", InvocationType="Event", Payload=b"x" * (LIMIT + 1))
    raise AssertionError("an event over 256 KiB was accepted")
except ClientError as e:
    got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
    assert got == ("RequestTooLargeException", 413), got

print(request_id)
