#!/usr/bin/python3
"""Rebalances a platform team runs into, on a 4-partition topic:

  - cooperative-sticky is the default: a member joining mid-job takes some
    partitions and the first member keeps its open jobs on the others (not
    dropped and re-read: their age runs on); the member leaving hands its
    partitions back without touching the jobs that stay; every job is then
    committed exactly once;
  - static membership (group.instance.id): a member stopped (SIGTERM) and
    restarted within the session timeout gets its partitions back, and the
    other member neither loses nor gains a partition meanwhile: the stop
    leaves the group no rebalance. (The embedded broker, librdkafka's mock
    cluster, still runs a rebalance when the static member rejoins, one that
    changes no assignment; a Kafka broker (KIP-345) hands the member its
    assignment back without one: docs/serve.md.)
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_rebalance")
d = h.Dataset(os.path.join(root, "a"), rows=8000, dim=16, rpf=500, nlist=16)
d.train("q")
jobs = ["r%d" % p for p in range(4)]  # job rP lives on partition P
evs = {}
for sid in jobs:
    d.train(sid, copy_from="q")
    evs[sid] = [d.stage(sid, "w%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-15", index="i-" + sid)[1]
                for i in range(4)]
broker, B = h.start_broker(partitions=4)
prod = h.producer(B)
KAFKA = ["--brokers", B, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300",
         "-X", "fetch.wait.max.ms=5", "--dataset-root", root, "--metrics-addr", "127.0.0.1:0"]


def jobs_of(serve):
    import json
    s, b = serve.scrape("/jobs")
    return {j["staging_id"]: j for j in json.loads(b)["jobs"]} if s == 200 else {}


def wait_for(fn, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


def assigned(serve):
    """The partitions a member holds, from its assigned/revoked log lines."""
    have = set()
    for l in serve.lines():
        m = re.search(r"event=partitions_(assigned|revoked) partitions=([0-9,]*)", l)
        if m:
            ps = {int(x) for x in m.group(2).split(",") if x}
            have = have | ps if m.group(1) == "assigned" else have - ps
    return have


# ---- cooperative-sticky: a member joins and leaves mid-job --------------------------
a = h.Serve(KAFKA + ["--group", "g-coop"], os.path.join(root, "a.log"))
check(wait_for(lambda: assigned(a) == {0, 1, 2, 3}), "the first member holds all 4 partitions")
check(any("protocol=cooperative" in l for l in a.lines() if "partitions_assigned" in l),
      "the rebalance protocol is cooperative by default")
for p, sid in enumerate(jobs):
    for raw in evs[sid][:2]:
        prod.send(h.STAGED, key=sid.encode(), value=raw, partition=p).get(30)
check(wait_for(lambda: len(jobs_of(a)) == 4 and
               all(j["shards_seen"] == 2 for j in jobs_of(a).values())),
      "four open jobs, half their shards each")
t_join = time.time()
b = h.Serve(KAFKA + ["--group", "g-coop"], os.path.join(root, "b.log"))
check(wait_for(lambda: assigned(b) and len(assigned(a)) + len(assigned(b)) == 4 and
               not assigned(a) & assigned(b)), "the joining member takes some partitions")
kept, moved = assigned(a), assigned(b)
revokes = [l for l in a.lines() if "event=partitions_revoked" in l]
check(len(revokes) == 1 and ("jobs_dropped=%d" % len(moved)) in revokes[0],
      "the first member gave up only the moved partitions' jobs: %s" % revokes)
js = jobs_of(a)
check({j["partition"] for j in js.values()} == kept and len(js) == len(kept),
      "it still has the jobs of the partitions it kept: %s" % sorted(js))
check(all(j["shards_seen"] == 2 and j["age_seconds"] >= time.time() - t_join for j in js.values()),
      "not dropped and re-read: their age runs on from before the join: %s" %
      [j["age_seconds"] for j in js.values()])
check(wait_for(lambda: len(jobs_of(b)) == len(moved)),
      "the new member re-read the moved partitions' jobs")
t_leave = time.time()
check(b.stop() == 0, "the second member leaves (SIGTERM)")
check(wait_for(lambda: assigned(a) == {0, 1, 2, 3}), "the first member takes its partitions back")
revokes = [l for l in a.lines() if "event=partitions_revoked" in l]
check(len(revokes) == 1, "and gives none up meanwhile")
js = jobs_of(a)
check(all(js[s]["age_seconds"] >= time.time() - t_join for s in js if js[s]["partition"] in kept),
      "its kept jobs were untouched by the leave")
for p, sid in enumerate(jobs):
    for raw in evs[sid][2:]:
        prod.send(h.STAGED, key=sid.encode(), value=raw, partition=p).get(30)
got = h.read_topic(B, h.COMMITTED, "SegmentsCommitted", timeout=90,
                   until=lambda l: len({m[3]["staging_id"] for m in l}) >= 4)
ids = [m[3]["staging_id"] for m in got]
time.sleep(1)
ids = [m[3]["staging_id"] for m in h.read_topic(B, h.COMMITTED, "SegmentsCommitted", timeout=10)]
check(sorted(ids) == jobs, "every job committed and announced exactly once: %s" % sorted(ids))
check(a.stop() == 0, "the first member exits 0")

# ---- static membership: a restart within the session timeout -----------------------
STATIC = KAFKA + ["--group", "g-static", "-X", "session.timeout.ms=10000"]
c = h.Serve(STATIC + ["-X", "group.instance.id=c"], os.path.join(root, "c1.log"))
check(wait_for(lambda: assigned(c) == {0, 1, 2, 3}), "static member c holds all partitions")
dd = h.Serve(STATIC + ["-X", "group.instance.id=d"], os.path.join(root, "d.log"))
check(wait_for(lambda: assigned(dd) and len(assigned(c)) + len(assigned(dd)) == 4),
      "static member d joins and takes some")
time.sleep(2)  # settled
c_parts, d_lines = assigned(c), len(dd.lines())
d_events = [l for l in dd.lines() if "partitions_" in l]
t0 = time.time()
check(c.stop() == 0, "c stops (SIGTERM; a static member does not leave the group)")
c2 = h.Serve(STATIC + ["-X", "group.instance.id=c"], os.path.join(root, "c2.log"))
check(wait_for(lambda: assigned(c2) == c_parts, timeout=30),
      "restarted within the session timeout, c gets its partitions back: %s (had %s)"
      % (sorted(assigned(c2)), sorted(c_parts)))
restart_s = time.time() - t0
time.sleep(1)
d_after = [l for l in dd.lines() if "partitions_" in l][len(d_events):]
check(not any("partitions_revoked" in l for l in d_after) and
      all(re.search(r"partitions=( |$)", l) for l in d_after),
      "d neither lost nor gained a partition across c's restart (%.1f s): %s" % (restart_s, d_after))
check(assigned(dd) == {0, 1, 2, 3} - c_parts, "the partitions stay split as before")
c2.stop()
dd.stop()
broker.kill()
h.finish()
