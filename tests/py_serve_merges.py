#!/usr/bin/python3
"""--max-merges is one bound for the whole `segforge serve` process: however
many jobs --workers finalizes at once, at most --max-merges segment builds
run at the same time, and a single job may use every slot.

Builds are slowed down (SF_FAULT=build.slow_partition: 50 ms per partition,
so about 0.8 s per segment here) so that they overlap for certain. The peak
is measured twice, independently: by the process (segforge_builds_running_peak
on /metrics) and from outside, by watching the segments directory for the
temporary files that builds write (one per running build) every few ms."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_merges")
d = h.Dataset(root, rows=8000, dim=16, rpf=500, nlist=16)  # 16 fragments
segdir = os.path.join(d.ds, "_indices", "segments")
os.makedirs(segdir, exist_ok=True)


class TempWatch:
    """Counts the temporary segment files present at once, polling."""

    def __init__(self):
        self.peak = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                n = sum(".sfseg.tmp." in f for f in os.listdir(segdir))
            except FileNotFoundError:
                n = 0
            self.peak = max(self.peak, n)
            time.sleep(0.003)

    def end(self):
        self.stop = True
        self.t.join()
        return self.peak


def scenario(name, workers, merges, jobs, shards, expect_peak):
    """`jobs` jobs of `shards` one-shard segments each, all complete at once,
    under --workers/--max-merges; the peak of builds running must be exactly
    expect_peak."""
    ids = ["%s-j%d" % (name, j) for j in range(jobs)]
    staged = []
    for j, sid in enumerate(ids):
        d.train(sid, copy_from=None if j == 0 and name == "w4m1" else "w4m1-j0")
        for s in range(shards):
            # Each job is its own index, so every job may cover fragments 0..shards-1.
            staged.append(d.stage(sid, "s%d" % s, str(s), "0-%d" % (shards - 1),
                                  index="i-" + sid))
    broker, boot = h.start_broker(partitions=4)
    serve = h.Serve(["--brokers", boot, "--group", "g-" + name, "-X", "fetch.wait.max.ms=5",
                     "--workers", str(workers), "--max-merges", str(merges),
                     "--metrics-addr", "127.0.0.1:0"],
                    os.path.join(root, name + ".log"), env={"SF_FAULT": "build.slow_partition"})
    serve.metrics_port()
    watch = TempWatch()
    prod = h.producer(boot)
    # Every job's last shard goes last, so that all jobs complete together.
    for s in range(shards):
        for j, sid in enumerate(ids):
            ev, raw = staged[j * shards + s]
            prod.send(h.STAGED, key=sid.encode(), value=raw)
    prod.flush(timeout=30)
    done = lambda l: len({m[3]["staging_id"] for m in l}) >= jobs  # noqa: E731
    got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", until=done, timeout=120)
    seen = watch.end()
    committed = {m[3]["staging_id"]: m[3] for m in got}
    what = "workers %d x max-merges %d, %d jobs of %d segments" % (workers, merges, jobs, shards)
    check(sorted(committed) == sorted(ids), "%s: every job is committed and announced" % what)
    check(all(len(ev["segments"]) == shards for ev in committed.values()),
          "%s: each job has its %d segments" % (what, shards))
    # The gauges are published by the poll loop every 100 ms: wait for the
    # one after the last build ended.
    end = time.time() + 15
    vals = serve.metrics()
    while vals.get("segforge_builds_running") != 0 and time.time() < end:
        time.sleep(0.1)
        vals = serve.metrics()
    peak = vals.get("segforge_builds_running_peak")
    check(peak == expect_peak,
          "%s: the process saw at most %d builds at once (segforge_builds_running_peak %s)"
          % (what, expect_peak, peak))
    check(seen == expect_peak,
          "%s: at most %d temporary segment files existed at once (saw %d)"
          % (what, expect_peak, seen))
    check(vals.get("segforge_build_slots") == merges and vals.get("segforge_builds_running") == 0,
          "%s: /metrics shows the bound (%s) and no build left running (%s)"
          % (what, vals.get("segforge_build_slots"), vals.get("segforge_builds_running")))
    check(serve.stop() == 0, "%s: SIGTERM exits 0" % what)
    broker.kill()
    broker.wait()


# More jobs at once than merges: the bound holds across jobs.
scenario("w4m1", workers=4, merges=1, jobs=4, shards=2, expect_peak=1)
# Fewer jobs than merges: the slots are not split per worker, both jobs'
# builds together reach the bound.
scenario("w2m3", workers=2, merges=3, jobs=2, shards=3, expect_peak=3)
# One job alone uses every slot.
scenario("w1m2", workers=1, merges=2, jobs=1, shards=3, expect_peak=2)
h.finish()
