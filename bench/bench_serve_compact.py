#!/usr/bin/python3
"""See bench/bench_serve_compact.sh. JOBS and GAP from the environment."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import serve_helpers as h  # noqa: E402

JOBS = int(os.environ.get("JOBS", "40"))
GAP = float(os.environ.get("GAP", "1.2"))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def one(mode):
    root = os.path.join(h.TMP, "bench_serve_compact_" + mode)
    d = h.Dataset(root, rows=JOBS * 100, dim=16, rpf=100, nlist=16)
    staged = []
    for j in range(JOBS):
        sid = "j%03d" % j
        d.train(sid, copy_from=None if j == 0 else "j000")
        staged.append((sid, d.stage(sid, "s0", str(j), str(j))[1]))
    broker, boot = h.start_broker(partitions=4)
    s = h.Serve(["--brokers", boot, "--group", "g", "-X", "fetch.wait.max.ms=5",
                 "--max-merges", "1", "--compact", mode],
                os.path.join(root, "serve.log"), env={"SF_FAULT": "build.slow_partition"})
    prod = h.producer(boot)
    for sid, raw in staged:
        h.send(prod, sid, raw)
        time.sleep(GAP)
    want = {sid for sid, _ in staged}
    h.read_topic(boot, h.COMMITTED, "SegmentsCommitted",
                 until=lambda l: want <= {m[3]["staging_id"] for m in l}, timeout=300)
    time.sleep(2)
    s.stop()
    broker.kill()
    wait, fin = [], []
    merges = yields = 0
    for line in s.lines():
        if "event=job_committed" in line:
            wait.append(int(re.search(r"wait_ms=(\d+)", line).group(1)))
            fin.append(float(re.search(r"finalize_ms=([\d.]+)", line).group(1)))
        if "event=compaction_committed" in line:
            merges += 1
            yields += int(re.search(r"yields=(\d+)", line).group(1))
    cat = d.catalog()
    segs = sum(len(ix["segments"]) for ix in cat["indexes"]) if cat else -1
    return wait, fin, merges, yields, segs


res = {m: one(m) for m in ("off", "on")}
print("%d jobs, one every %.1f s, --max-merges 1, 50 ms per partition copy" % (JOBS, GAP))
print("%-8s %8s %8s %8s %10s %10s %8s %8s %9s" % (
    "compact", "p50 ms", "p99 ms", "max ms", "fin p50", "fin p99", "merges", "yields",
    "segments"))
for m, (wait, fin, merges, yields, segs) in res.items():
    print("%-8s %8d %8d %8d %10.1f %10.1f %8d %8d %9d" % (
        m, pct(wait, 50), pct(wait, 99), max(wait), pct(fin, 50), pct(fin, 99), merges, yields,
        segs))
off, on = res["off"][0], res["on"][0]
print("on / off: p50 %.2fx, p99 %.2fx" % (pct(on, 50) / max(1, pct(off, 50)),
                                          pct(on, 99) / max(1, pct(off, 99))))
