"""Tally from Python: an add with an idempotency token over gRPC (grpcio), retried the way
Tally asks clients to retry, then read back; and the same counter family over the Redis
protocol (redis-py).

    python3 -m pip install grpcio grpcio-tools redis
    bash run.sh 127.0.0.1:7090 127.0.0.1:7379

run.sh generates the gRPC stubs from ../../proto into a temporary directory first.
"""

import sys
import time
import uuid

import grpc
import redis
from tally.v1 import counter_pb2, counter_pb2_grpc, namespace_pb2, namespace_pb2_grpc

GRPC_ADDR, RESP_ADDR = sys.argv[1], sys.argv[2]
NAMESPACE = "example_python"

# Refusals after which nothing was written, or that a moment may cure: sending the add again
# with the same token is safe, because the server applies one token at most once.
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def add(counters, counter, delta, token, attempts=5):
    """AddCount with `token`, retried with the same token on a refusal that allows it."""
    request = counter_pb2.AddCountRequest(
        namespace=NAMESPACE,
        counter_name=counter,
        delta=delta,
        idempotency_token=counter_pb2.IdempotencyToken(token=token),
    )
    for attempt in range(attempts):
        try:
            return counters.AddCount(request, timeout=5)
        except grpc.RpcError as e:
            if e.code() not in RETRY or attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)


def main():
    channel = grpc.insecure_channel(GRPC_ADDR)
    counters = counter_pb2_grpc.CounterServiceStub(channel)
    namespaces = namespace_pb2_grpc.NamespaceServiceStub(channel)
    try:
        namespaces.CreateNamespace(
            namespace_pb2.CreateNamespaceRequest(
                name=NAMESPACE,
                config=namespace_pb2.NamespaceConfig(counter_type=counter_pb2.COUNTER_TYPE_ACCURATE),
            )
        )
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise

    # One token per logical add, made once, before the first attempt.
    token = f"order-{uuid.uuid4()}"
    first = add(counters, "orders", 3, token)
    print(f"add: applied={first.applied}")
    again = add(counters, "orders", 3, token)  # a client that lost the answer sends it again
    print(f"retry: applied={again.applied}")
    count = counters.GetCount(counter_pb2.GetCountRequest(namespace=NAMESPACE, counter_name="orders"))
    print(f"get: count={count.count}")

    host, port = RESP_ADDR.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port), decode_responses=True)
    r.incrby(f"{NAMESPACE}:visits", 2)
    print(f"redis: visits={r.get(f'{NAMESPACE}:visits')}")


if __name__ == "__main__":
    main()
