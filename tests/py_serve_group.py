#!/usr/bin/python3
"""Two `segforge serve` processes in one consumer group on a 4-partition
topic (the broker is its own process, `segforge broker`):

  - they share the partitions, and so the jobs: each commits some;
  - one of them is then replaced by a processor that is killed mid-build
    (SF_FAULT=build.mid_segment, SIGKILL); the survivor takes its partitions
    over and every job is still committed exactly once.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka.partitioner.default import DefaultPartitioner  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_group")
d = h.Dataset(root, rows=8000, dim=16, rpf=500, nlist=16)  # 16 fragments
broker, B = h.start_broker(partitions=4)
KAFKA = ["--brokers", B, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
part_of = DefaultPartitioner()  # murmur2, as librdkafka's murmur2_random and Java


def jobs_on_every_partition(prefix, per_partition):
    """Staging ids chosen so that each partition gets `per_partition` jobs."""
    out, count, n = [], {p: 0 for p in range(4)}, 0
    while len(out) < 4 * per_partition:
        sid = "%s-%d" % (prefix, n)
        n += 1
        p = part_of(sid.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
        if count[p] < per_partition:
            count[p] += 1
            out.append(sid)
    return out


def stage_jobs(ids):
    """Each job: its own index, two shards over fragments 0-15."""
    evs = []
    for sid in ids:
        d.train(sid, copy_from=None if not os.path.exists(d.staging("q")) else "q")
        evs += [(sid, d.stage(sid, "w%d" % i, "%d-%d" % (8 * i, 8 * i + 7), "0-15", index="i-" + sid)[1])
                for i in range(2)]
    return evs


d.train("q")
first = jobs_on_every_partition("a", 2)
second = jobs_on_every_partition("b", 2)
ev1, ev2 = stage_jobs(first), stage_jobs(second)
prod = h.producer(B)

pa = h.Serve(KAFKA, os.path.join(root, "a.log"))
pb = h.Serve(KAFKA, os.path.join(root, "b.log"))
# Both members hold partitions once the group has settled.
check(pa.wait_log("event=partitions_assigned", 60) and pb.wait_log("event=partitions_assigned", 60),
      "both processors get partitions")
for sid, raw in ev1:
    h.send(prod, sid, raw)
done = lambda want: (lambda l: {m[3]["staging_id"] for m in l} >= set(want))  # noqa: E731
got = h.read_topic(B, h.COMMITTED, "SegmentsCommitted", until=done(first), timeout=90)
check({m[3]["staging_id"] for m in got} >= set(first), "the first 8 jobs are committed")
na = sum("event=job_committed" in l for l in pa.lines())
nb = sum("event=job_committed" in l for l in pb.lines())
check(na > 0 and nb > 0 and na + nb == len(first),
      "the two processors share the jobs (%d and %d)" % (na, nb))

# Replace A with a processor that dies in the middle of its first build.
check(pa.stop() == 0, "A leaves the group cleanly on SIGTERM")
pc = h.Serve(KAFKA, os.path.join(root, "c.log"), env={"SF_FAULT": "build.mid_segment"})
check(pc.wait_log("event=partitions_assigned", 60), "the crashing processor gets partitions")
for sid, raw in ev2:
    h.send(prod, sid, raw)
try:
    rc = pc.p.wait(60)
except Exception:
    rc = None
check(rc == -9, "it is killed in the middle of a build (exit %s)" % rc)
got = h.read_topic(B, h.COMMITTED, "SegmentsCommitted", until=done(first + second), timeout=120)
committed = {m[3]["staging_id"] for m in got}
check(committed >= set(second), "the survivor commits every job of the dead member: missing %s" %
      sorted(set(second) - committed))
check(pb.stop() == 0, "the survivor exits 0")

cat = d.catalog()
ids = [j["staging_id"] for j in cat["jobs"]]
check(sorted(ids) == sorted(first + second), "every job is in the catalog exactly once")
left = [f for f in os.listdir(os.path.join(d.ds, "_indices", "segments")) if ".tmp" in f]
check(not left, "no half-written segment is left: %s" % left)
h.finish()
