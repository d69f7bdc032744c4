#!/usr/bin/python3
"""Crash tests of `segforge serve`: the processor is killed (SIGKILL, through
SF_FAULT) at each fault point, then restarted. The broker runs as its own
process (`segforge broker`), so the events and the group's offsets outlive
the processor, as with a real cluster.

After each restart: the job is committed exactly once in the catalog, its
SegmentsCommitted is on the topic (duplicates allowed, all with the same
event_id), every segment of it verifies, and no half-written file is left.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_crash")
d = h.Dataset(root, rows=16000, dim=16, rpf=500, nlist=16)  # 32 fragments
broker, B = h.start_broker(partitions=4)
# A killed member must leave the group quickly for the restart to get its
# partitions (the default session timeout is 45 s).
KAFKA = ["--brokers", B, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
         "--target-segment-bytes", "150K"]
POINTS = ["serve.after_consume", "build.mid_segment", "serve.after_commit", "serve.after_publish"]
prod = h.producer(B)

for n, point in enumerate(POINTS):
    job = "job-" + point
    first = 8 * n  # each job its own fragments of index idx
    d.train(job, copy_from="job-" + POINTS[0] if n else None)
    evs = [d.stage(job, "w%d" % i, "%d-%d" % (first + 2 * i, first + 2 * i + 1),
                   "%d-%d" % (first, first + 7)) for i in range(4)]
    for ev, raw in evs:
        h.send(prod, job, raw)
    crashed = h.Serve(KAFKA, os.path.join(root, "crash-%d.log" % n), env={"SF_FAULT": point})
    try:
        rc = crashed.p.wait(90)
    except Exception:
        rc = None
    check(rc == -9, "%s: the processor is killed there (exit %s)" % (point, rc))

    again = h.Serve(KAFKA, os.path.join(root, "restart-%d.log" % n))
    mine = lambda l: [m for m in l if m[3]["staging_id"] == job]  # noqa: E731
    got = mine(h.read_topic(B, h.COMMITTED, "SegmentsCommitted",
                            until=lambda l: len(mine(l)) >= 1, timeout=90))
    check(again.wait_log("event=job_committed staging_id=%s" % job, timeout=30),
          "%s: the restarted processor finishes the job" % point)
    check(again.stop() == 0, "%s: the restarted processor drains and exits 0" % point)
    got = mine(h.read_topic(B, h.COMMITTED, "SegmentsCommitted", timeout=10))

    cat = d.catalog()
    entries = [j for j in cat["jobs"] if j["staging_id"] == job]
    check(len(entries) == 1, "%s: the job is in the catalog exactly once" % point)
    versions = [j["version"] for j in cat["jobs"]]
    check(len(versions) == len(set(versions)) == n + 1, "%s: one catalog version per job" % point)
    check(len(got) >= 1, "%s: SegmentsCommitted is on the topic (%d)" % (point, len(got)))
    ids = {m[3]["event_id"] for m in got}
    check(ids == {"%s@%d" % (job, entries[0]["version"])},
          "%s: every announcement carries the same event_id %s" % (point, sorted(ids)))
    if point == "serve.after_publish":
        check(len(got) == 2, "after_publish: announced before the crash and again after (%d)" % len(got))
    if point == "serve.after_commit":
        check(len(got) == 1 and any("already=1" in l for l in again.lines()),
              "after_commit: the restart finds the commit and announces it")
    for s in got[0][3]["segments"]:
        path = os.path.join(d.ds, "_indices", s["path"])
        ok = os.path.exists(path) and os.path.getsize(path) == s["bytes"]
        ok = ok and h.subprocess.run([h.SEGFORGE, "inspect", path], capture_output=True).returncode == 0
        check(ok, "%s: segment %s verifies" % (point, s["segment_id"]))
    for sub in ("segments", "_catalog"):
        left = [f for f in os.listdir(os.path.join(d.ds, "_indices", sub)) if ".tmp" in f]
        check(not left, "%s: no temporary file left in %s: %s" % (point, sub, left))

r = d.recall()
check(r["rows"] == 16000 and r["recall"] == 1.0,
      "every crashed job is searchable: %d rows, recall %.3f" % (r["rows"], r["recall"]))
h.finish()
