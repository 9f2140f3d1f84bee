"""A gRPC client of Tally that is not ours: Python grpcio with stubs generated from proto/.

Usage:
  grpc_client.py GEN_DIR ADDR scenario           run the end-to-end scenario, print "ok <step>" lines
  grpc_client.py GEN_DIR ADDR add-many NS COUNTER N PREFIX
                                                  N adds of 1 with tokens PREFIX-i; print "acked <token>"
Exits non-zero on the first failed expectation. With TALLY_GRPC_CA set to a PEM file, the
channel is TLS with that file as its only trust root.
"""

import os
import sys
import time

GEN_DIR, ADDR, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, GEN_DIR)

import grpc  # noqa: E402
from google.protobuf import duration_pb2, timestamp_pb2  # noqa: E402
from tally.v1 import counter_pb2, counter_pb2_grpc, namespace_pb2, namespace_pb2_grpc  # noqa: E402

if os.environ.get("TALLY_GRPC_CA"):
    with open(os.environ["TALLY_GRPC_CA"], "rb") as f:
        channel = grpc.secure_channel(ADDR, grpc.ssl_channel_credentials(root_certificates=f.read()))
else:
    channel = grpc.insecure_channel(ADDR)
counters = counter_pb2_grpc.CounterServiceStub(channel)
namespaces = namespace_pb2_grpc.NamespaceServiceStub(channel)


def token(name, at=None):
    ts = timestamp_pb2.Timestamp()
    if at is None:
        ts.GetCurrentTime()
    else:
        ts.FromMicroseconds(at)
    return counter_pb2.IdempotencyToken(token=name, generation_time=ts)


def ok(step):
    print("ok", step, flush=True)


def expect_code(step, code, call):
    try:
        call()
    except grpc.RpcError as e:
        if e.code() != code:
            raise AssertionError(f"{step}: expected {code}, got {e.code()}: {e.details()}")
        ok(step)
        return
    raise AssertionError(f"{step}: expected {code}, the call succeeded")


def scenario():
    accurate = namespace_pb2.NamespaceConfig(counter_type=counter_pb2.COUNTER_TYPE_ACCURATE)
    created = namespaces.CreateNamespace(namespace_pb2.CreateNamespaceRequest(name="py", config=accurate))
    assert created.config.counter_type == counter_pb2.COUNTER_TYPE_ACCURATE
    ok("create namespace")

    t1 = token("py-1")
    first = counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=5, idempotency_token=t1))
    retry = counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=5, idempotency_token=t1))
    assert first.applied and not retry.applied, (first, retry)
    # The token alone: a retry restamped with a new generation time, or sent with none.
    restamped = counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=5, idempotency_token=token("py-1")))
    bare = counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=5, idempotency_token=counter_pb2.IdempotencyToken(token="py-1")))
    assert not restamped.applied and not bare.applied, (restamped, bare)
    assert bare.idempotency_token.generation_time == first.idempotency_token.generation_time, (first, bare)
    ok("idempotent retry")

    got = counters.AddAndGetCount(counter_pb2.AddAndGetCountRequest(namespace="py", counter_name="c", delta=2))
    assert got.count == 7, got
    assert got.idempotency_token.token.startswith("srv-"), got
    ok("add and get")

    assert counters.GetCount(counter_pb2.GetCountRequest(namespace="py", counter_name="c")).count == 7
    ok("get")

    cleared = counters.ClearCount(counter_pb2.ClearCountRequest(namespace="py", counter_name="c", idempotency_token=token("py-clear")))
    assert cleared.applied
    assert counters.GetCount(counter_pb2.GetCountRequest(namespace="py", counter_name="c")).count == 0
    ok("clear")

    fast = namespace_pb2.NamespaceConfig(
        counter_type=counter_pb2.COUNTER_TYPE_EVENTUAL,
        accept_limit=duration_pb2.Duration(nanos=200_000_000),
        clock_skew=duration_pb2.Duration(nanos=100_000_000),
        coalesce=duration_pb2.Duration(nanos=50_000_000),
    )
    namespaces.CreateNamespace(namespace_pb2.CreateNamespaceRequest(name="pyev", config=fast))
    for i in range(3):
        counters.AddCount(counter_pb2.AddCountRequest(namespace="pyev", counter_name="c", delta=1, idempotency_token=token(f"ev-{i}")))
    deadline = time.time() + 20
    while True:
        count = counters.GetCount(counter_pb2.GetCountRequest(namespace="pyev", counter_name="c"))
        if count.count == 3:
            assert count.counter_type == counter_pb2.COUNTER_TYPE_EVENTUAL and count.HasField("as_of")
            break
        assert time.time() < deadline, f"eventual counter did not converge: {count}"
        time.sleep(0.05)
    ok("eventual converges")

    names = [n.name for n in namespaces.ListNamespaces(namespace_pb2.ListNamespacesRequest()).namespaces]
    assert names == ["default", "py", "pyev"], names
    ok("list namespaces")

    C = grpc.StatusCode
    expect_code("invalid namespace", C.INVALID_ARGUMENT,
                lambda: counters.GetCount(counter_pb2.GetCountRequest(namespace="no way", counter_name="c")))
    expect_code("oversized counter name", C.INVALID_ARGUMENT,
                lambda: counters.GetCount(counter_pb2.GetCountRequest(namespace="py", counter_name="c" * 257)))
    # On the embedded store a namespace is made on its first write, with default settings.
    assert counters.GetCount(counter_pb2.GetCountRequest(namespace="madeonwrite", counter_name="c")).count == 0
    counters.AddCount(counter_pb2.AddCountRequest(namespace="madeonwrite", counter_name="c", delta=1))
    made = namespaces.GetNamespace(namespace_pb2.GetNamespaceRequest(name="madeonwrite"))
    assert made.config.counter_type == counter_pb2.COUNTER_TYPE_EVENTUAL, made
    ok("namespace made on its first write")
    expect_code("unknown namespace", C.NOT_FOUND,
                lambda: namespaces.GetNamespace(namespace_pb2.GetNamespaceRequest(name="nowhere")))
    old = int(time.time() * 1e6) - 60_000_000
    expect_code("token too old", C.OUT_OF_RANGE,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=1, idempotency_token=token("old", old))))
    future = int(time.time() * 1e6) + 60_000_000
    expect_code("token in the future", C.OUT_OF_RANGE,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="c", delta=1, idempotency_token=token("new", future))))
    counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="big", delta=2**63 - 1))
    expect_code("overflow", C.OUT_OF_RANGE,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="big", delta=1)))
    reused = token("reused")
    counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="r", delta=1, idempotency_token=reused))
    expect_code("token reused for another delta", C.ALREADY_EXISTS,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="r", delta=2, idempotency_token=reused)))
    expect_code("empty token", C.INVALID_ARGUMENT,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="r", delta=1,
                                                                      idempotency_token=counter_pb2.IdempotencyToken(token=""))))
    expect_code("oversized message", C.OUT_OF_RANGE,
                lambda: counters.AddCount(counter_pb2.AddCountRequest(namespace="py", counter_name="x" * 100_000, delta=1)))
    expect_code("default namespace is permanent", C.FAILED_PRECONDITION,
                lambda: namespaces.DeleteNamespace(namespace_pb2.DeleteNamespaceRequest(name="default")))
    assert counters.GetCount(counter_pb2.GetCountRequest(namespace="py", counter_name="r")).count == 1
    ok("refusals changed nothing")


def add_many(ns, counter, n, prefix):
    for i in range(int(n)):
        name = f"{prefix}-{i}"
        counters.AddCount(counter_pb2.AddCountRequest(namespace=ns, counter_name=counter, delta=1, idempotency_token=token(name)))
        print("acked", name, flush=True)


if MODE == "scenario":
    scenario()
elif MODE == "add-many":
    add_many(*sys.argv[4:8])
else:
    raise SystemExit(f"unknown mode {MODE}")
