#!/usr/bin/python3
"""`segforge serve` when its own side fails: what must stop the service
(exit status 1, offsets held, so that a supervisor's restart retries), what
must not (a dataset that cannot take a job's failed marker holds that job
only) and what must not hang it. The broker runs as its own process (`segforge
broker`) so that the topics outlive the processor."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_faults")
d = h.Dataset(root, rows=8000, dim=16, rpf=500, nlist=16)
FAST = ["-X", "fetch.wait.max.ms=5"]


def committed_offsets(bootstrap, group):
    offs, _ = h.group_offsets(bootstrap, group)
    return {tp.partition: o for tp, o in offs.items()}


def wait_exit(serve, timeout):
    try:
        return serve.p.wait(timeout)
    except Exception:
        return None


def rejected_of(bootstrap, sid):
    got = h.read_topic(bootstrap, h.REJECTED, "ShardRejected", timeout=5)
    return [m for m in got if m[3]["staging_id"] == sid]


# ---- a failed marker that cannot be written holds the job, not the service ---------
# The marker is the dataset's: one dataset that cannot take it must not stop
# the others. The job is held (no dead letter may go before its marker, its
# offsets stay), retried with backoff, reported; once the marker can be
# written the job is dead-lettered as usual.
broker, boot = h.start_broker(partitions=1)
d.train("mk")
f0 = d.stage("mk", "f0", "0-3", "0-7")
f1 = d.stage("mk", "f1", "3-7", "0-7")  # overlaps f0: the job fails
failed = os.path.join(d.ds, "_indices", "_failed")
os.makedirs(os.path.dirname(failed), exist_ok=True)
with open(failed, "w") as f:  # a file where the marker directory must be
    f.write("in the way\n")
serve = h.Serve(["--brokers", boot, "--group", "g-marker", "--retry-max-backoff", "1s",
                 "--metrics-addr", "127.0.0.1:0"] + FAST,
                os.path.join(root, "marker.log"))
prod = h.producer(boot)
h.send(prod, "mk", f0[1])
h.send(prod, "mk", f1[1])
check(serve.wait_log("event=job_held staging_id=mk", timeout=30, count=3),
      "a failed marker that cannot be written holds the job and retries it")
check(serve.p.poll() is None, "serve keeps running")
held = [l for l in serve.lines() if "event=job_held staging_id=mk" in l]
check(held and "what=failed_marker" in held[-1] and "failed marker" in held[-1],
      "the log says the failed marker cannot be written: %s" % held[-1:])
status, body = serve.scrape("/healthz")
check(status == 200 and body.startswith("degraded:") and "what=failed_marker" in body
      and d.ds in body, "/healthz is degraded, naming the dataset: %r" % body[:300])
check(rejected_of(boot, "mk") == [], "no dead letter is published before the marker")
check(committed_offsets(boot, "g-marker").get(0, 0) == 0, "the job's offsets are held")
os.unlink(failed)
check(serve.wait_log("event=job_dead_lettered staging_id=mk", timeout=30),
      "once the marker can be written the job is dead-lettered, without a restart")
check(os.path.isfile(os.path.join(failed, "mk")), "the marker is written")
check(len(rejected_of(boot, "mk")) == 2, "both events of the job are dead-lettered")
status, body = serve.scrape("/healthz")
check(status == 200 and body.strip() == "ok", "/healthz is ok again: %r" % body)
time.sleep(0.5)
check(committed_offsets(boot, "g-marker").get(0, 0) == 2, "the offsets move past the job")
check(serve.stop() == 0, "SIGTERM exits 0")
broker.kill()
broker.wait()

# ---- a fatal producer error stops the service instead of retrying forever --------
broker, boot = h.start_broker(partitions=1)
serve = h.Serve(["--brokers", boot, "--group", "g-fatal"] + FAST,
                os.path.join(root, "fatal.log"), env={"SF_FAULT": "serve.producer_fatal"})
prod = h.producer(boot)
h.send(prod, "junk", b"\xc3\x01garbage")  # its dead letter is the first publish
t0 = time.time()
status = wait_exit(serve, 40)
check(status == 1, "a fatal producer error stops serve with status 1 (got %s after %.1f s)"
      % (status, time.time() - t0))
check(not any("publish_retry" in l for l in serve.lines()), "it is not retried")
check(any("fatal" in l and "OUT_OF_ORDER_SEQUENCE" in l for l in serve.lines()),
      "the log names the producer's fatal error")
check(committed_offsets(boot, "g-fatal").get(0, 0) == 0, "the event's offset is held")
broker.kill()
broker.wait()

# ---- SIGTERM with dead letters that cannot be delivered: bounded drain -----------
# linger.ms keeps every produced message in the client's queue, so each
# publish attempt lasts the whole delivery timeout, as with the broker gone.
broker, boot = h.start_broker(partitions=1)
N = 15
serve = h.Serve(["--brokers", boot, "--group", "g-drain", "--drain-timeout", "2s",
                 "-X", "linger.ms=600000", "-X", "message.timeout.ms=900000",
                 "-X", "segforge.delivery.timeout.ms=1000"] + FAST,
                os.path.join(root, "drain.log"))
prod = h.producer(boot)
for i in range(N):
    h.send(prod, "junk%d" % i, b"\xc3\x01garbage%d" % i)
check(serve.wait_log("publish_retry", timeout=30), "the dead letters are stuck")
check(serve.wait_log("event=event_rejected", timeout=30, count=N), "all %d events were read" % N)
t0 = time.time()
status = serve.stop(timeout=60)
took = time.time() - t0
check(status == 0, "SIGTERM exits 0 (got %s)" % status)
check(took < 2 + 1 + 5, "the drain ends soon after --drain-timeout: %.1f s with %d queued"
      % (took, N))
check(committed_offsets(boot, "g-drain").get(0, 0) == 0,
      "the undelivered dead letters' offsets stay uncommitted")
broker.kill()
broker.wait()
h.finish()
