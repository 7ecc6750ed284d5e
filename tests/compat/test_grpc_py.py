"""Python grpcio against a running Spool: compiles proto/ with grpcio-tools (as a user following docs/grpc.md would),
then enqueue -> reserve -> ack, a failed call's status and `spool-error-code` metadata, a consume stream, and the
standard health check. Usage: test_grpc_py.py HOST:PORT"""

import pathlib
import queue as stdlib_queue
import subprocess
import sys
import tempfile
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ADDRESS = sys.argv[1]
REPO = pathlib.Path(__file__).resolve().parents[2]
failures = []


def check(name, got, want):
    if got != want:
        failures.append(f"{name}: got {got!r}, want {want!r}")


out = tempfile.mkdtemp()
subprocess.run(
    [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
     str(REPO / "proto/spool/v1/job.proto"), str(REPO / "proto/spool/v1/spool.proto")],
    check=True,
)
sys.path.insert(0, out)
from spool.v1 import job_pb2, spool_pb2, spool_pb2_grpc  # noqa: E402  (generated just above)

channel = grpc.insecure_channel(ADDRESS)
grpc.channel_ready_future(channel).result(timeout=30)
spool = spool_pb2_grpc.SpoolStub(channel)
queue = f"py-grpc-{uuid.uuid4().hex[:8]}"

# enqueue -> reserve -> ack
job = job_pb2.NewJob(queue=queue, payload=b"hello", options=job_pb2.JobOptions(priority=3, headers={"k": "v"}))
job_id = spool.Enqueue(spool_pb2.EnqueueRequest(job=job)).id
jobs = spool.Reserve(spool_pb2.ReserveRequest(queues=[queue], count=1, timeout_ms=1000)).jobs
check("reserved", [j.id for j in jobs], [job_id])
check("payload", jobs[0].payload, b"hello")
check("headers", dict(jobs[0].headers), {"k": "v"})
check("state", jobs[0].state, job_pb2.JOB_STATE_LEASED)
spool.Ack(spool_pb2.AckRequest(id=job_id, token=jobs[0].lease.token))
stats = spool.GetQueueStats(spool_pb2.GetQueueStatsRequest(queue=queue)).stats
check("acked_total", stats.acked_total, 1)

# A failed call: status code plus the stable code in the trailing metadata.
try:
    spool.GetJob(spool_pb2.GetJobRequest(id=job_id))
    failures.append("get of an acked job should fail")
except grpc.RpcError as e:
    check("not found status", e.code(), grpc.StatusCode.NOT_FOUND)
    check("error code metadata", dict(e.trailing_metadata()).get("spool-error-code"), "NOTFOUND")
try:
    spool.Enqueue(spool_pb2.EnqueueRequest())
    failures.append("enqueue without a job should fail")
except grpc.RpcError as e:
    check("missing job status", e.code(), grpc.StatusCode.INVALID_ARGUMENT)

# A consume stream: one credit, a job arrives, the ack goes back on the same stream with a correlation id.
second = spool.Enqueue(spool_pb2.EnqueueRequest(job=job_pb2.NewJob(queue=queue, payload=b"streamed"))).id
requests = stdlib_queue.Queue()
requests.put(spool_pb2.ConsumeRequest(start=spool_pb2.ConsumeStart(queues=[queue], credits=1)))
stream = spool.Consume(iter(requests.get, None))
event = next(stream)
check("streamed job", (event.WhichOneof("kind"), event.job.id, event.job.payload), ("job", second, b"streamed"))
requests.put(spool_pb2.ConsumeRequest(request_id=7, ack=spool_pb2.AckRequest(id=second, token=event.job.lease.token)))
result = next(stream)
check("stream ack", (result.WhichOneof("kind"), result.result.request_id, result.result.HasField("error")),
      ("result", 7, False))
requests.put(None)
stream.cancel()

health = health_pb2_grpc.HealthStub(channel)
check("health", health.Check(health_pb2.HealthCheckRequest(service="")).status, health_pb2.HealthCheckResponse.SERVING)
check("health spool.v1.Spool",
      health.Check(health_pb2.HealthCheckRequest(service="spool.v1.Spool")).status,
      health_pb2.HealthCheckResponse.SERVING)

for f in failures:
    print(f, file=sys.stderr)
if not failures:
    print("test_grpc_py.py: all checks passed")
sys.exit(1 if failures else 0)
