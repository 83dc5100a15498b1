"""Invokes one function once through boto3, with no retries, and prints what came back as
one JSON line: {"status": HTTP status, "code": error code or null, "reason": Lambda's
Reason or null}. Run by control/service/tests/quotas.rs.

usage: quota_invoke_boto3.py ENDPOINT CA_PEM CREDENTIALS_FILE PROFILE FUNCTION
"""

import json
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA, CREDENTIALS, PROFILE, FUNCTION = sys.argv[1:6]

os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CREDENTIALS
lam = boto3.session.Session(profile_name=PROFILE, region_name="local").client(
    "lambda",
    endpoint_url=ENDPOINT,
    verify=CA,
    # One attempt: a throttle must show, not be retried away.
    config=botocore.config.Config(retries={"total_max_attempts": 1}),
)

try:
    answer = lam.invoke(FunctionName=FUNCTION, Payload=b'{"name":"quota"}')
    print(json.dumps({"status": answer["StatusCode"], "code": None, "reason": None}))
except ClientError as e:
    print(json.dumps({
        "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        "code": e.response["Error"]["Code"],
        "reason": e.response.get("Reason"),
    }))
