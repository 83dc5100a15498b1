"""boto3, the stock AWS SDK for Python, against a running ember-control: its SigV4
signatures are accepted, bad keys are refused with Lambda's error codes, and responses
carry a request id. Run by control/tests/server_auth.rs; exits non-zero on the first
mismatch.

usage: server_auth_boto3.py ENDPOINT CA_PEM, with AWS_SHARED_CREDENTIALS_FILE naming the
service's credentials file (profile "ember").
"""

import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA = sys.argv[1:3]
CONFIG = botocore.config.Config(retries={"max_attempts": 1})


def client(**keys):
    session = boto3.session.Session(region_name="local", **keys)
    return session.client("lambda", endpoint_url=ENDPOINT, verify=CA, config=CONFIG)


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


admin = client(profile_name="ember")
reply = admin.list_functions()
assert reply["Functions"] == [], reply
assert reply["ResponseMetadata"]["RequestId"], reply["ResponseMetadata"]
# A qualified ARN with '$' and ':' in the path, percent-encoded by botocore and signed
# doubly encoded: the signature passes, the function does not exist.
credentials = boto3.session.Session(profile_name="ember").get_credentials()
arn = "arn:aws:lambda:local:123456789012:function:nothing:$LATEST"
assert error_code(lambda: admin.get_function(FunctionName=arn)) == "ResourceNotFoundException"

wrong = client(aws_access_key_id=credentials.access_key, aws_secret_access_key="x" * 40)
assert error_code(wrong.list_functions) == "InvalidSignatureException"
unknown = client(aws_access_key_id="AKIAAAAAAAAAAAAAAAAA", aws_secret_access_key="x" * 40)
assert error_code(unknown.list_functions) == "UnrecognizedClientException"
print("ok")
