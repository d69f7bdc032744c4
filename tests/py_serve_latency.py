#!/usr/bin/python3
"""The first job of `segforge serve` is announced as fast as the later ones.

The first SegmentsCommitted used to take some 800 ms to publish (publish_ms in
the job_committed log line) where the later ones took a few: the producer
met its output topic only in that first send, and librdkafka asks for the
metadata of such a topic at its next one-second topic scan. serve now fetches
its topics' metadata at start-up (event=producer_ready) and the publisher
fetches a topic's metadata itself on a first send.

Three jobs, one after another, on the embedded broker: every job's
publish_ms, the first one included, must stay under 200 ms (a publish is a
few milliseconds on loopback; the scan's wait was 0 to 1000 ms, typically
600 to 900 ms after the consumer group's join), and each SegmentsCommitted
is read back with python3-kafka.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

root = os.path.join(h.TMP, "py_serve_latency")
d = h.Dataset(root, rows=4000, dim=8, rpf=500, nlist=4)
JOBS = 3
staged = []
for i in range(JOBS):
    job = "job-%d" % i
    d.train(job)
    staged.append(d.stage(job, "w0", "%d-%d" % (2 * i, 2 * i + 1), "%d-%d" % (2 * i, 2 * i + 1),
                          index="idx%d" % i))

serve = h.Serve(["--partitions", "4"], os.path.join(root, "serve.log"), embedded=True)
check = h.check
check(serve.wait_log("event=serving", timeout=60), "serve starts")
check(serve.wait_log("event=producer_ready", timeout=60),
      "the producer knows its topics before the first job")
prod = h.producer(serve.bootstrap)
for i, (ev, raw) in enumerate(staged):
    h.send(prod, ev["staging_id"], raw)
    check(serve.wait_log("event=job_committed", count=i + 1, timeout=60),
          "%s is committed" % ev["staging_id"])

ms = {}
for line in serve.lines():
    m = re.search(r"event=job_committed staging_id=(\S+) .*publish_ms=([\d.]+)", line)
    if m:
        ms[m.group(1)] = float(m.group(2))
print("publish_ms: %s" % ms)
check(sorted(ms) == ["job-%d" % i for i in range(JOBS)], "every job logs its publish_ms")
for i in range(JOBS):
    job = "job-%d" % i
    check(ms.get(job, 1e9) < 200, "%s (%s job) is published in under 200 ms: %.1f ms"
          % (job, "the first" if i == 0 else "a later", ms.get(job, -1)))

got = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted",
                   until=lambda l: len(l) >= JOBS, timeout=30)
check(sorted(e["staging_id"] for _, _, _, e in got) == ["job-%d" % i for i in range(JOBS)],
      "each job's SegmentsCommitted is on the topic")
check(serve.stop() == 0, "SIGTERM exits 0")
h.finish()
