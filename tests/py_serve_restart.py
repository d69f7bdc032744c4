#!/usr/bin/python3
"""A restart reads again from the group's offsets, which stop at the oldest
event of a job not yet finished, so it may start in the middle of jobs that
were committed since. Those jobs must be recognised from the catalog at
their first re-read event: announced again (same event_id, the catalog's
segments and shard count) and their offsets released at once, even when
only part of their events is read again and `segforge gc` has removed their
staging roots; never held until the staging timeout, never dead-lettered.

One partition, topic order  c0 a0 b0 a1 c1 a0'  (a0' re-announces a0):
the first processor commits A and C while B stays open, so the group offset
stops at b0. The second reads b0 a1 c1 a0' again: A and C are partial there.
(Found by a randomized soak test with kills and restarts.)
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_restart")
d = h.Dataset(os.path.join(root, "d"), rows=1200, dim=8, rpf=100, nlist=8)  # 12 fragments
broker, B = h.start_broker(partitions=1)
# Default staging timeout (10 min): nothing below may wait for it.
KAFKA = ["--brokers", B, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
         "-X", "fetch.wait.max.ms=5", "--log-level", "debug"]
ev = {}
for job, base in (("A", 0), ("B", 4), ("C", 8)):
    d.train(job, copy_from=None if job == "A" else "A")
    for i in range(2):
        ev[job.lower() + str(i)] = d.stage(job, "w%d" % i, "%d-%d" % (base + 2 * i, base + 2 * i + 1),
                                           "%d-%d" % (base, base + 3), index="i" + job)
a0r = dict(ev["a0"][0], event_id="A/w0-again", staged_at_ms=ev["a0"][0]["staged_at_ms"] + 5000)
ev["a0'"] = (a0r, h.encode_staged(a0r))
prod = h.producer(B)


def send(*names):
    for n in names:
        h.send(prod, ev[n][0]["staging_id"], ev[n][1])


def offsets():
    c = KafkaConsumer(bootstrap_servers=B, group_id="segforge-finalizer", enable_auto_commit=False,
                      api_version_auto_timeout_ms=10000)
    tp = TopicPartition(h.STAGED, 0)
    r = (c.committed(tp) or 0, c.end_offsets([tp])[tp])
    c.close()
    return r


send("c0", "a0", "b0", "a1", "c1", "a0'")
p1 = h.Serve(KAFKA, os.path.join(root, "p1.log"))
check(p1.wait_log("event=job_committed staging_id=A", 60) and
      p1.wait_log("event=job_committed staging_id=C", 30), "the first processor commits A and C")
time.sleep(1)
check(p1.stop() == 0, "it stops on SIGTERM")
check(offsets() == (2, 6), "the group offset stops at b0, B's open event: %s" % (offsets(),))

# gc removes the staging roots of the committed jobs A and C.
h.run([h.SEGFORGE, "gc", "--dataset", d.ds])
left = sorted(os.listdir(os.path.join(d.ds, "_indices", "_staging")))
check(left == ["B"], "gc left only B's staging root: %s" % left)

p2 = h.Serve(KAFKA, os.path.join(root, "p2.log"))
check(p2.wait_log("event=job_committed staging_id=C", 30),
      "the second processor recognises C, read again in part, from the catalog")
check(p2.wait_log("event=job_committed staging_id=A", 30), "and A")
send("b1")
check(p2.wait_log("event=job_committed staging_id=B", 60), "B commits when its last shard comes")
t0 = time.time()
while offsets() != (7, 7) and time.time() - t0 < 20:
    time.sleep(0.2)
# B's b0 held the group offset at 2; once B is done nothing else may hold
# it (before, C's re-read tail held it at 4 until C's staging timeout).
check(offsets() == (7, 7), "the group's offset reaches the end within seconds: %s" % (offsets(),))
check(p2.stop() == 0, "the second processor stops on SIGTERM")

rej = h.read_topic(B, h.REJECTED, "ShardRejected", timeout=5)
check(not rej, "no event of a committed job is dead-lettered: %s" %
      [(v["staging_id"], v["reason"]) for _, _, _, v in rej])
ann = h.read_topic(B, h.COMMITTED, "SegmentsCommitted", timeout=10)
cat = {j["staging_id"]: j for j in d.catalog()["jobs"]}
check(sorted(cat) == ["A", "B", "C"], "the catalog holds each job once")
for job in "ABC":
    mine = [v for _, _, _, v in ann if v["staging_id"] == job]
    check(mine and {v["event_id"] for v in mine} == {"%s@%d" % (job, cat[job]["version"])},
          "%s: every announcement has the catalog's event_id (%d of them)" % (job, len(mine)))
    check(all(v["num_shards"] == 2 and v["total_rows"] == 400 for v in mine),
          "%s: every announcement counts the job's 2 shards and 400 rows, not what was read again"
          % job)
    segs = {tuple(sorted(s["segment_id"] for s in v["segments"])) for v in mine}
    check(segs == {tuple(sorted(cat[job]["segment_ids"]))}, "%s: the catalog's segments" % job)
broker.kill()
broker.wait()
h.finish()
