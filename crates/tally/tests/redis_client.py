"""redis-py (the Python client most Redis users have) against a running tally server.

Usage: redis_client.py HOST:PORT. Prints one `ok <step>` line per step; exits non-zero on the
first failure.
"""

import sys

import redis


def ok(step):
    print(f"ok {step}", flush=True)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port), decode_responses=True)
    assert r.ping()
    ok("ping")

    # The default pipeline() wraps its commands in MULTI/EXEC.
    pipe = r.pipeline()
    pipe.incr("py:views")
    pipe.incrby("py:views", 4)
    pipe.get("py:views")
    assert pipe.execute() == [1, 5, "5"]
    ok("pipeline (MULTI/EXEC)")
    pipe = r.pipeline(transaction=False)
    pipe.incr("py:views")
    pipe.decr("py:views")
    assert pipe.execute() == [6, 5]
    ok("pipeline without a transaction")

    # A token alone makes TALLY.ADD apply once.
    assert [r.execute_command("TALLY.ADD", "py:orders", 2, "order-1") for _ in range(3)] == [1, 0, 0]
    assert r.get("py:orders") == "2"
    ok("TALLY.ADD retried")

    for i in range(25):
        r.incr(f"py:item:{i}")
    keys = sorted(r.scan_iter(match="py:item:*", count=7))
    assert keys == sorted(f"py:item:{i}" for i in range(25)), keys
    assert len(r.keys("py:item:1*")) == 11
    assert r.exists("py:item:3", "py:item:99", "py:views") == 2
    ok("scan_iter, keys, exists")

    assert r.command_count() >= 20
    info = r.info()
    assert info["redis_mode"] == "standalone" and "connected_clients" in info, info
    assert "db0" in r.info("keyspace")
    ok("command count and info")

    try:
        r.config_set("appendfsync", "no")
        raise AssertionError("CONFIG SET was accepted")
    except redis.ResponseError as e:
        assert "not supported" in str(e), e
    ok("config set refused")


if __name__ == "__main__":
    main()
