"""redis-py against a running Spool: once with redis-py's default connection (HELLO 3 in redis-py 8), once with
protocol=2. Usage: test_redis_py.py PORT"""

import sys
import threading
import uuid

import redis

PORT = int(sys.argv[1])
failures = []


def check(name, got, want):
    if got != want:
        failures.append(f"{name}: got {got!r}, want {want!r}")


for kwargs in ({}, {"protocol": 2}):
    r = redis.Redis(port=PORT, **kwargs)
    check(f"ping/{kwargs}", r.ping(), True)
    # HELLO without a version reports the protocol the connection already speaks.
    hello = r.execute_command("HELLO")
    protocol = hello[b"proto"] if isinstance(hello, dict) else hello[hello.index(b"proto") + 1]
    if not kwargs and int(redis.__version__.split(".")[0]) >= 8:
        check("redis-py 8 default is RESP3", protocol, 3)
    q = f"py-{protocol}-{uuid.uuid4().hex[:8]}"

    job_id = r.execute_command("JOB.PUSH", q, b"payload", "HEADER", "k", "v").decode()
    jobs = r.execute_command("JOB.FETCH", q, "TIMEOUT", 1000)
    job = jobs[0] if protocol == 3 else dict(zip(jobs[0][::2], jobs[0][1::2]))
    check(f"fetch id/{protocol}", job[b"id"].decode(), job_id)
    check(f"fetch payload/{protocol}", job[b"payload"], b"payload")
    check(f"ack/{protocol}", r.execute_command("JOB.ACK", job_id, job[b"token"]) in (b"OK", "OK", True), True)

    # A plain producer/consumer pair, and a pipeline (MULTI/EXEC by default).
    check(f"lpush/{protocol}", r.lpush(q, "a", "b"), 2)
    check(f"rpop/{protocol}", r.rpop(q), b"a")
    pipe = r.pipeline()
    pipe.lpush(q, "c").llen(q).rpop(q)
    check(f"pipeline/{protocol}", pipe.execute(), [2, 2, b"b"])

    # A blocked BRPOP is woken by another connection's push.
    got = []
    waiter = threading.Thread(target=lambda: got.append(redis.Redis(port=PORT, **kwargs).brpop([q + "-x", q], 5)))
    r.delete(q)
    waiter.start()
    redis.Redis(port=PORT, **kwargs).lpush(q, "woken")
    waiter.join()
    check(f"brpop/{protocol}", tuple(got[0]), (q.encode(), b"woken"))

    try:
        r.execute_command("JOB.ACK", job_id, "1")
        failures.append(f"stale ack/{protocol}: no error")
    except redis.ResponseError as e:
        check(f"stale ack code/{protocol}", str(e).split()[0], "NOTFOUND")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("test_redis_py.py: all checks passed")
