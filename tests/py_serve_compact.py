#!/usr/bin/python3
"""Compaction in `segforge serve` (docs/serve.md, "Compaction").

Many small jobs into one index leave one segment each; serve with
--compact on merges them in the background after commits:
  1. with --compact off, 30 one-fragment jobs leave 30 segments; their
     search answers at nprobe = nlist are the reference;
  2. kill -9 in the middle of a merge (SF_FAULT=serve.compact_mid): the
     catalog reads, every version names files that are there and intact,
     the search answers are unchanged;
  3. a restart with --compact on (and --max-merges 2, builds slowed down so
     that they overlap) completes the merging while 8 jobs of another index
     build beside it: the segment count drops to the policy's bound, the
     search answers equal the reference, every SegmentsCompacted read back
     with python3-kafka and python3-avro matches the catalog, and the peak
     of builds running at once never exceeded --max-merges.
A commit of the index triggers its compaction; here a redelivery of a
committed job does (serve recognises it and announces it again).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_compact")
NJOBS = 30
d = h.Dataset(root, rows=NJOBS * 200, dim=16, rpf=200, nlist=16)  # 30 fragments


def segments(index="idx"):
    cat = d.catalog()
    if not cat:
        return None
    for ix in cat.get("indexes", []):
        if ix["name"] == index:
            return ix["segments"]
    return []


def answers():
    """Per query, the set of (id, score) at nprobe = nlist: exact on IVF_FLAT."""
    p = h.run([h.SEGFORGE, "search", "--dataset", d.ds, "--index", "idx", "--queries",
               os.path.join(d.gen, "query.fvecs"), "--k", "10", "--nprobe", str(d.nlist),
               "--json"])
    import json
    res = json.loads(p.stdout)["results"]
    return [sorted(zip(r["ids"], [round(s, 4) for s in r["scores"]])) for r in res]


def versions_intact():
    """Every catalog version reads and names segment files that are there and
    pass `segforge inspect` (every CRC)."""
    vdir = os.path.join(d.ds, "_indices", "_catalog")
    vs = sorted(int(f[1:].split(".")[0]) for f in os.listdir(vdir)
                if f.startswith("v") and f.endswith(".avro") and f[1:-5].isdigit())
    bad = []
    checked = set()
    import json
    for v in vs:
        p = h.subprocess.run([h.SEGFORGE, "inspect", "--dataset", d.ds, "--version", str(v),
                              "--json"], capture_output=True, timeout=60)
        if p.returncode:
            bad.append("version %d does not read" % v)
            continue
        for ix in json.loads(p.stdout)["indexes"]:
            for s in ix["segments"]:
                path = os.path.join(d.ds, "_indices", s["path"])
                if path in checked:
                    continue
                checked.add(path)
                q = h.subprocess.run([h.SEGFORGE, "inspect", path], capture_output=True,
                                     timeout=60)
                if q.returncode:
                    bad.append("version %d: %s" % (v, s["path"]))
    return vs, bad


# ---- the jobs: one fragment each -------------------------------------------------
jobs = []
for j in range(NJOBS):
    sid = "job%02d" % j
    d.train(sid, copy_from=None if j == 0 else "job00")
    jobs.append((sid, d.stage(sid, "s0", str(j), str(j))))
other = []
for j in range(8):  # another index, beside the compaction in part 3
    sid = "other%d" % j
    d.train(sid, copy_from="job00")
    other.append((sid, d.stage(sid, "s0", str(j), str(j), index="idx2")))

broker, boot = h.start_broker(partitions=4)
prod = h.producer(boot)


def serve(name, compact, env=None, extra=()):
    return h.Serve(["--brokers", boot, "--group", "g", "-X", "fetch.wait.max.ms=5",
                    "--compact", compact, "--metrics-addr", "127.0.0.1:0",
                    "--log-level", "debug"] + list(extra),
                   os.path.join(root, name + ".log"), env=env)


def committed(staging_ids, timeout=120):
    want = set(staging_ids)
    got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted",
                       until=lambda l: want <= {m[3]["staging_id"] for m in l}, timeout=timeout)
    return want <= {m[3]["staging_id"] for m in got}


# ---- 1. --compact off: one segment per job ---------------------------------------
s1 = serve("off", "off")
for sid, (ev, raw) in jobs:
    h.send(prod, sid, raw)
check(committed([sid for sid, _ in jobs]), "30 jobs are committed with --compact off")
check(s1.wait_log("compact=off", 5), "serve logs compact=off")
check(len(segments()) == NJOBS, "with --compact off the index keeps one segment per job (%d)"
      % len(segments()))
ref = answers()
check(s1.stop() == 0, "serve with --compact off stops cleanly")
check(not any("compaction_started" in l for l in s1.lines()), "...and never compacted")

# ---- 2. kill -9 in the middle of a merge ------------------------------------------
s2 = serve("crash", "on", env={"SF_FAULT": "serve.compact_mid"})
h.send(prod, jobs[-1][0], jobs[-1][1][1])  # a redelivery: committed again, compaction follows
s2.p.wait(60)
check(s2.p.returncode == -9, "serve dies by SIGKILL at serve.compact_mid (status %s)"
      % s2.p.returncode)
check(any("event=compaction_started" in l for l in s2.lines()), "...in a merge it started")
tmps = [f for f in os.listdir(os.path.join(d.ds, "_indices", "segments")) if ".tmp." in f]
check(len(tmps) >= 1, "the merge's temporary file is left behind (%d)" % len(tmps))
vs, bad = versions_intact()
check(vs and not bad, "after the kill every catalog version reads and names intact files %s"
      % bad)
check(len(segments()) == NJOBS, "the killed merge committed nothing: %d segments"
      % len(segments()))
check(answers() == ref, "search answers are unchanged after the kill")

# ---- 3. restart: the merges complete, beside another index's jobs -----------------
s3 = serve("on", "on", env={"SF_FAULT": "build.slow_partition"}, extra=["--max-merges", "2"])
s3.metrics_port()
h.send(prod, jobs[-1][0], jobs[-1][1][1])  # triggers the compaction of idx again
time.sleep(1.0)  # let the merge start, then jobs arrive while it runs
for sid, (ev, raw) in other:
    h.send(prod, sid, raw)
check(committed([sid for sid, _ in other]), "8 jobs of another index commit beside it")
idle = lambda: any("event=compaction_idle" in l and "index=idx " in l for l in s3.lines())  # noqa
end = time.time() + 120
while time.time() < end and not idle():
    time.sleep(0.2)
check(idle(), "the compaction of idx ran until the policy wanted no merge")
n = len(segments())
check(n <= 10, "the segment count dropped from %d to %d (the policy allows 10)" % (NJOBS, n))
check(answers() == ref, "search answers at nprobe = nlist equal those before compaction")
vs, bad = versions_intact()
check(not bad, "every catalog version names intact files %s" % bad)
m = s3.metrics()
check(m.get("segforge_builds_running_peak", 99) <= 2,
      "the peak of builds running at once (jobs and merges) stayed <= --max-merges 2 (%s)"
      % m.get("segforge_builds_running_peak"))
check(m.get('segforge_compactions_total{result="committed"}', 0) >= 1,
      "compactions_total{result=committed} counts the merges (%s)"
      % m.get('segforge_compactions_total{result="committed"}'))
check(m.get("segforge_compaction_bytes_written_total", 0) > 0, "bytes rewritten are counted")
check(m.get("segforge_compactions_running", 1) == 0, "no compaction is running at the end")
merges = [l for l in s3.lines() if "event=compaction_committed" in l and "index=idx " in l]
check(merges and all("announced=1" in l for l in merges), "each merge was announced")

# SegmentsCompacted, read back by an independent client and decoder.
evs = h.read_topic(boot, h.COMPACTED, "SegmentsCompacted",
                   until=lambda l: len(l) >= len(merges), timeout=60)
idx_evs = [e[3] for e in evs if e[3]["index_name"] == "idx"]
check(len(idx_evs) >= len(merges) and len(merges) >= 1,
      "python3-avro reads a SegmentsCompacted for every merge (%d events, %d merges)"
      % (len(idx_evs), len(merges)))
live = {s["segment_id"]: s for s in segments()}
latest = {}
ok_fields = True
for e in idx_evs:
    a = e["added_segments"][0]
    ok_fields &= e["event_id"] == "%s@%d" % (a["segment_id"], e["catalog_version"])
    ok_fields &= e["dataset_uri"] == os.path.realpath(d.ds)
    ok_fields &= len(e["removed_segment_ids"]) >= 2 and e["total_rows"] == a["num_rows"]
    ok_fields &= e["bytes_read"] > 0 and a["path"] == "segments/%s.sfseg" % a["segment_id"]
    latest[a["segment_id"]] = e
check(ok_fields, "each event names its merged segment, version, inputs, rows and bytes")
keys = {m[2] for m in evs if m[3]["index_name"] == "idx"}
check(keys == {("%s#idx" % os.path.realpath(d.ds)).encode()},
      "events are keyed by the index's ownership key <dataset>#<index>")
merged_live = [sid for sid in live if sid.startswith("compact-")]
check(merged_live and all(sid in latest for sid in merged_live),
      "every merged segment in the catalog was announced")
for sid in merged_live:
    frags = sorted(h.roaring_read(latest[sid]["added_segments"][0]["fragments"]))
    check(latest[sid]["added_segments"][0]["num_rows"] == live[sid]["num_rows"],
          "%s: the event's rows equal the catalog's (%d fragments)" % (sid, len(frags)))
check(s3.stop() == 0, "serve with --compact on stops cleanly")
h.finish()
