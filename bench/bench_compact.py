#!/usr/bin/python3
"""The serve mode of bench/bench_compact.sh (see its header): incremental
jobs through `segforge serve` on its embedded broker, compaction off, then
on, in one run, and one segment of the same rows as the reference.

    bench_compact.py JOBS ROWS_PER_JOB NLIST RUNS [SERVE POLICY FLAGS...]

Environment: SEGFORGE, SF_SRC, SF_TEST_TMP (as the tests), GAP (seconds
between two jobs' starts, default 0.2: a worker starts its next job at most
this often; a slower worker simply goes on at its own pace).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import serve_helpers as h  # noqa: E402

# bench_compact.sh passes the four numbers, always, then the policy flags.
if len(sys.argv) < 5 or not all(x.isdigit() and int(x) > 0 for x in sys.argv[1:5]):
    raise SystemExit("usage: bench_compact.py JOBS ROWS_PER_JOB NLIST RUNS [FLAGS...] "
                     "(run bench/bench_compact.sh): got %r" % sys.argv[1:])
JOBS, RPJ, NLIST, RUNS = (int(x) for x in sys.argv[1:5])
POLICY = sys.argv[5:]
GAP = float(os.environ.get("GAP", "0.2"))
DIM, NPROBE = 64, 16
S = h.SEGFORGE
root = os.path.join(h.TMP, "bench_compact")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
data = os.path.join(root, "data")
base, query = os.path.join(data, "base.fvecs"), os.path.join(data, "query.fvecs")


def run(*args):
    return h.run([S] + [str(a) for a in args], timeout=3600)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def qps_once(ds):
    return json.loads(run("search", "--json", "--dataset", ds, "--index", "idx", "--queries",
                          query, "--k", 10, "--nprobe", NPROBE).stdout)["qps"]


def search_all(dss):
    """{ds: median q/s of RUNS runs} at nprobe 16, the datasets' runs
    interleaved so that a change of the machine's load hits them alike."""
    qps = {ds: [] for ds in dss}
    for _ in range(RUNS):
        for ds in dss:
            qps[ds].append(qps_once(ds))
    return {ds: median(v) for ds, v in qps.items()}


def recall(ds):
    out = run("search", "--dataset", ds, "--index", "idx", "--queries", query, "--groundtruth",
              os.path.join(data, "gt.ivecs"), "--rows-per-fragment", RPJ, "--k", 10,
              "--nprobe", NPROBE).stdout.decode()
    rec = re.search(r"recall@10 = ([\d.]+)", out)
    return rec.group(1) if rec else "?"


def index_of(ds):
    cat = json.loads(run("inspect", "--dataset", ds, "--json").stdout)
    return next(ix for ix in cat["indexes"] if ix["name"] == "idx")


def committed_lines(s):
    return [l for l in s.lines() if "event=job_committed" in l]


def one(mode):
    """JOBS jobs through serve --compact MODE: the figures of the run."""
    ds = os.path.join(root, "ds-" + mode)
    os.makedirs(ds)
    args = ["--compact", mode, "--dataset-root", root, "--log-level", "debug"]
    s = h.Serve(args + (POLICY if mode == "on" else []), os.path.join(root, mode + ".log"),
                embedded=True)
    t0 = time.time()
    late = 0
    for j in range(JOBS):
        start = t0 + j * GAP
        if time.time() < start:
            time.sleep(start - time.time())
        else:
            late += j > 0
        st = os.path.join(ds, "_indices", "_staging", "job-%d" % j)
        if j == 0:  # the index's first job brings the quantizer, trained once for both runs
            os.makedirs(st)
            shutil.copy(os.path.join(root, "quantizer"), st)
        else:  # the incremental job's quantizer: the committed one of the index
            run("train", "--from-dataset", ds, "--index", "idx", "--out", st)
        run("stage", "--vectors", base, "--staging", st, "--rows-per-fragment", RPJ,
            "--fragments", j, "--shard-id", "s0", "--publish", "--brokers", s.bootstrap,
            "--dataset-uri", ds, "--index-name", "idx", "--column", "emb", "--staging-id",
            "job-%d" % j, "--expected-fragments", j)
        if j == 0 and not s.wait_log("event=job_committed", 120):
            raise SystemExit("the first job did not commit: see " + s.log)
        if (j + 1) % 100 == 0:
            print("  %s: %d jobs published, %d committed, %.0f s" % (
                mode, j + 1, len(committed_lines(s)), time.time() - t0), flush=True)
    publish_s = time.time() - t0
    if not s.wait_log("event=job_committed", 600, count=JOBS):
        raise SystemExit("%s: only %d of %d jobs committed" % (mode, len(committed_lines(s)),
                                                               JOBS))
    commit_s = time.time() - t0
    if mode == "on":  # the run the last commit queued ends when the policy wants nothing
        end = time.time() + 1800
        while time.time() < end:
            lines = s.lines()
            last = max(i for i, l in enumerate(lines) if "event=job_committed" in l)
            if any("event=compaction_idle" in l or "event=compaction_left" in l
                   for l in lines[last:]):
                break
            time.sleep(0.5)
    settle_s = time.time() - t0
    if s.stop(120) != 0:
        raise SystemExit("%s: serve did not stop cleanly: see %s" % (mode, s.log))
    wait, fin = [], []
    merges = written = read = yields = 0
    for line in s.lines():
        if "event=job_committed" in line:
            wait.append(int(re.search(r"wait_ms=(\d+)", line).group(1)))
            fin.append(float(re.search(r"finalize_ms=([\d.]+)", line).group(1)))
        if "event=compaction_committed" in line:
            merges += 1
            read += int(re.search(r"bytes_read=(\d+)", line).group(1))
            written += int(re.search(r"bytes_written=(\d+)", line).group(1))
            yields += int(re.search(r"yields=(\d+)", line).group(1))
    ix = index_of(ds)
    return dict(ds=ds, wait=wait, fin=fin, merges=merges, read=read, written=written,
                yields=yields, segments=len(ix["segments"]), bytes=ix["bytes"],
                rows=ix["num_rows"], recall=recall(ds), publish_s=publish_s,
                commit_s=commit_s, settle_s=settle_s, late=late)


rows = JOBS * RPJ
print("data: %d x %d clustered, 1000 queries; IVF_SQ nlist %d; %d jobs of %d rows through "
      "serve (embedded broker), one started every %.2f s at most" % (rows, DIM, NLIST, JOBS,
                                                                       RPJ, GAP), flush=True)
run("gen", "--out", data, "--rows", rows, "--dim", DIM, "--queries", 1000, "--clusters", 1000,
    "--k", 10)
run("train", "--vectors", base, "--out", root, "--index-type", "IVF_SQ", "--metric", "L2",
    "--nlist", NLIST)
res = {m: one(m) for m in ("off", "on")}
# The reference: the same rows as one shard in one segment, the same quantizer.
one_ds = os.path.join(root, "one")
st = os.path.join(one_ds, "_indices", "_staging", "all")
os.makedirs(st)
shutil.copy(os.path.join(root, "quantizer"), st)
run("stage", "--vectors", base, "--staging", st, "--rows-per-fragment", RPJ, "--fragments",
    "0-%d" % (JOBS - 1), "--shard-id", "all")
run("finalize", "--dataset", one_ds, "--index", "idx", "--column", "emb", "--staging-id", "all")
ref_rec = recall(one_ds)
qps = search_all([res["off"]["ds"], res["on"]["ds"], one_ds])
ref_qps = qps[one_ds]
for m in ("off", "on"):
    res[m]["qps"] = qps[res[m]["ds"]]

ingested = res["off"]["bytes"]  # every job's segment, none rewritten
for m in ("off", "on"):
    r = res[m]
    if r["rows"] != rows:
        print("WARNING: %s holds %d rows, not %d" % (m, r["rows"], rows))
    print("--compact %s: %d jobs published in %.0f s (%d started late), all committed at "
          "%.0f s, compaction done at %.0f s" % (m, JOBS, r["publish_s"], r["late"],
                                                 r["commit_s"], r["settle_s"]))
print("policy flags of serve --compact on: %s; load average at the end: %s" % (
    " ".join(POLICY) or "(defaults)", " ".join(open("/proc/loadavg").read().split()[:3])))
print("%-10s %9s %8s %8s %9s %9s %8s %8s %10s %8s %10s" % (
    "compact", "segments", "q/s", "recall", "vs one", "p50 ms", "p99 ms", "fin p50",
    "merges", "yields", "write amp"))
for m in ("off", "on"):
    r = res[m]
    print("%-10s %9d %8.0f %8s %8.2fx %9d %8d %8.1f %10d %8d %10.2f" % (
        m, r["segments"], r["qps"], r["recall"], r["qps"] / ref_qps, pct(r["wait"], 50),
        pct(r["wait"], 99), pct(r["fin"], 50), r["merges"], r["yields"],
        1 + r["written"] / ingested))
print("%-10s %9d %8.0f %8s %8.2fx" % ("one seg", 1, ref_qps, ref_rec, 1.0))
on, off = res["on"], res["off"]
print("commit latency, on / off: p50 %.2fx, p99 %.2fx (target <= 1.2x)" % (
    pct(on["wait"], 50) / max(1, pct(off["wait"], 50)),
    pct(on["wait"], 99) / max(1, pct(off["wait"], 99))))
print("search at the end, on: %.2fx of one segment (target >= 0.9x); off: %.2fx" % (
    on["qps"] / ref_qps, off["qps"] / ref_qps))
print("write amplification (bytes written per byte ingested, %d ingested): %.2f; merges read "
      "%d bytes" % (ingested, 1 + on["written"] / ingested, on["read"]))
