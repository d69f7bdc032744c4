#!/usr/bin/python3
"""`segforge gc --grace 0 --keep-versions 1` in a loop while `segforge serve`
finalizes jobs: gc never takes a segment from under a commit in progress.

Twelve jobs of one index (two one-fragment shards each, one segment per
shard) are published to serve's embedded broker; serve commits them two at
a time, each commit held half a second before it takes the catalog lock
(SF_FAULT=catalog.pause_before_lock), so that gc runs between the builds and
their commits. Afterwards:
  - every job is announced once, and no finalize had to be retried;
  - every segment of every catalog version left on disk exists and every
    announced segment verifies;
  - search over the dataset finds every row (exact recall, nprobe = nlist);
  - gc did run meanwhile (it removed old versions), and no intent is left.
"""
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
JOBS = 12
root = os.path.join(h.TMP, "py_serve_gc")
d = h.Dataset(root, rows=JOBS * 2 * 500, dim=16, rpf=500, nlist=16)  # 24 fragments
evs = []
for j in range(JOBS):
    job = "job-%02d" % j
    d.train(job, copy_from="job-00" if j else None)  # one quantizer for the index
    expected = "%d-%d" % (2 * j, 2 * j + 1)
    evs += [d.stage(job, "s%d" % k, str(2 * j + k), expected) for k in range(2)]

# --compact off: this test is about commits racing gc; serve's compaction
# would swap the announced segments out (and gc then rightly remove them).
serve = h.Serve(["--partitions", "4", "--max-merges", "2", "--workers", "2", "--log-level", "debug",
                 "--compact", "off"],
                os.path.join(root, "serve.log"), env={"SF_FAULT": "catalog.pause_before_lock"},
                embedded=True)

stop = threading.Event()
gc_runs = []


def gc_loop():
    while not stop.is_set():
        p = subprocess.run([h.SEGFORGE, "gc", "--dataset", d.ds, "--grace", "0", "--keep-versions", "1"],
                           capture_output=True, timeout=60)
        gc_runs.append((p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")))


t = threading.Thread(target=gc_loop)
t.start()
try:
    prod = h.producer(serve.bootstrap)
    for ev, raw in evs:
        h.send(prod, ev["staging_id"], raw)
    done = lambda l: len({m[3]["staging_id"] for m in l}) >= JOBS  # noqa: E731
    got = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted", until=done, timeout=180)
finally:
    stop.set()
    t.join(90)

by_job = {}
for _, _, _, ev in got:
    by_job.setdefault(ev["staging_id"], []).append(ev)
check(len(by_job) == JOBS, "every job is committed and announced (%d of %d)" % (len(by_job), JOBS))
check(all(len(v) == 1 for v in by_job.values()), "each job is announced once")
retries = [l for l in serve.lines() if "event=finalize_retry" in l]
check(not retries, "no finalize failed and was retried: %s" % retries[:2])
check(gc_runs and all(rc == 0 for rc, _, _ in gc_runs),
      "gc ran %d times, every run succeeded: %s" % (len(gc_runs), [e for rc, _, e in gc_runs if rc][:1]))
check(sum("removed version" in out for _, out, _ in gc_runs) > 0,
      "gc removed old versions meanwhile (it ran between the commits)")

missing = []
cat_dir = os.path.join(d.ds, "_indices", "_catalog")
versions = sorted(f for f in os.listdir(cat_dir) if f.startswith("v") and f.endswith(".avro"))
for name in versions:
    p = subprocess.run([h.SEGFORGE, "inspect", "--dataset", d.ds, "--version", str(int(name[1:21])),
                        "--json"], capture_output=True, timeout=60)
    if p.returncode:
        missing.append("%s: %s" % (name, p.stderr.decode().strip()))
        continue
    for ix in h.json.loads(p.stdout)["indexes"]:
        missing += ["%s names %s" % (name, s["path"]) for s in ix["segments"]
                    if not os.path.exists(os.path.join(d.ds, "_indices", s["path"]))]
check(versions and not missing, "every segment of every version on disk exists (%d versions; %d "
      "missing: %s)" % (len(versions), len(missing), missing[:3]))
bad = []
for evl in by_job.values():
    for s in evl[0]["segments"]:
        path = os.path.join(d.ds, "_indices", s["path"])
        if subprocess.run([h.SEGFORGE, "inspect", path], capture_output=True).returncode:
            bad.append(s["path"])
check(not bad, "every announced segment verifies: %s" % bad[:3])
cat = d.catalog()
nsegs = sum(len(ix["segments"]) for ix in cat["indexes"]) if cat else 0
check(nsegs == 2 * JOBS, "the newest version lists all %d segments (%d)" % (2 * JOBS, nsegs))
r = d.recall()
check(r["rows"] == JOBS * 1000 and r["recall"] == 1.0,
      "search finds every row: %d rows, recall %.3f" % (r["rows"], r["recall"]))
idir = os.path.join(d.ds, "_indices", "_intents")
left = os.listdir(idir) if os.path.isdir(idir) else []
check(not left, "no intent is left behind: %s" % left)
check(serve.stop() == 0, "serve drains and exits 0")
h.finish()
