"""A gRPC client for tests/tests/h2.rs: waits for GO_FILE to exist (so the agent can
attach before its connection exists), then on one channel calls Health/Check OK times
for "periscope.Known" and NOT_FOUND times for "periscope.Unknown", in an order from
SEED, and prints "done OK NOT_FOUND" with the counts it saw.

Usage: grpc_client.py HOST:PORT OK NOT_FOUND SEED GO_FILE
"""
import os
import random
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    target, ok, not_found, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    calls = ["periscope.Known"] * ok + ["periscope.Unknown"] * not_found
    random.Random(seed).shuffle(calls)
    print("ready", flush=True)
    while not os.path.exists(sys.argv[5]):
        time.sleep(0.01)
    seen = {"OK": 0, "NOT_FOUND": 0}
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in calls:
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                seen["OK"] += 1
            except grpc.RpcError as e:
                seen[e.code().name] = seen.get(e.code().name, 0) + 1
    print(f"done {seen['OK']} {seen['NOT_FOUND']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
