"""Load on a running ember-control with boto3, the stock AWS SDK for Python: synchronous
invocations of one function from THREADS threads, either COUNT in all or, with UNTIL (a
Unix time), as many as start before then. SDK retries are off, so every failure shows. Prints one JSON
object: {"ok": n, "errors": {"ServiceException": n, ...}, "function_errors": n}.

usage: fleet_load_boto3.py ENDPOINT CA FUNCTION PAYLOAD THREADS COUNT [UNTIL], with
AWS_SHARED_CREDENTIALS_FILE naming the service's credentials file (profile "ember").
"""

import collections
import json
import sys
import threading
import time

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT, CA, FUNCTION, PAYLOAD = sys.argv[1:5]
THREADS, COUNT = int(sys.argv[5]), int(sys.argv[6])
UNTIL = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
CONFIG = botocore.config.Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    read_timeout=120,
    max_pool_connections=THREADS,
)

client = boto3.session.Session(profile_name="ember", region_name="local").client(
    "lambda", endpoint_url=ENDPOINT, verify=CA, config=CONFIG
)
lock = threading.Lock()
outcomes = collections.Counter()
errors = collections.Counter()
left = [COUNT]


def more():
    with lock:
        if UNTIL:
            return time.time() < UNTIL
        if left[0] == 0:
            return False
        left[0] -= 1
        return True


def run():
    while more():
        try:
            response = client.invoke(FunctionName=FUNCTION, Payload=PAYLOAD.encode())
            response["Payload"].read()
            kind = "function_errors" if response.get("FunctionError") else "ok"
            with lock:
                outcomes[kind] += 1
        except ClientError as e:
            with lock:
                errors[e.response["Error"]["Code"]] += 1
        except Exception as e:  # connection errors and the like
            with lock:
                errors[type(e).__name__] += 1


threads = [threading.Thread(target=run) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({
    "ok": outcomes["ok"],
    "function_errors": outcomes["function_errors"],
    "errors": dict(errors),
}))
