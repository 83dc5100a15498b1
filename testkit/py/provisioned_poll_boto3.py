"""Watch one provisioned-concurrency configuration through boto3, as fast as it answers,
so that short-lived states (a share moving off a dead worker) show. Run by
control/tests/provisioned_e2e.rs: prints `polling` once the client is ready, then one
line `ALLOCATED AVAILABLE STATUS` per change, and exits once the configuration has been
below READY and is READY again (or after SECONDS, non-zero).

usage: provisioned_poll_boto3.py ENDPOINT CA_PEM CREDENTIALS_FILE FUNCTION QUALIFIER SECONDS
"""

import os
import sys
import time

import boto3
import botocore.config

ENDPOINT, CA, CREDENTIALS, FUNCTION, QUALIFIER, SECONDS = sys.argv[1:7]

os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CREDENTIALS
lam = boto3.session.Session(profile_name="ember", region_name="local").client(
    "lambda",
    endpoint_url=ENDPOINT,
    verify=CA,
    config=botocore.config.Config(retries={"total_max_attempts": 1}),
)


def status():
    got = lam.get_provisioned_concurrency_config(
        FunctionName=FUNCTION, Qualifier=QUALIFIER
    )
    return (
        got["AllocatedProvisionedConcurrentExecutions"],
        got["AvailableProvisionedConcurrentExecutions"],
        got["Status"],
    )


# The first call opens the connection: "polling" means the next ones are fast.
last = status()
print("polling", flush=True)
print(*last, flush=True)
left_ready = last[2] != "READY"
deadline = time.monotonic() + float(SECONDS)
while time.monotonic() < deadline:
    now = status()
    if now != last:
        print(*now, flush=True)
        last = now
    left_ready = left_ready or now[2] != "READY"
    if left_ready and now[2] == "READY":
        sys.exit(0)
sys.exit(f"not READY again within {SECONDS} s")
