#!/usr/bin/python3
"""`segforge serve` against its embedded broker, seen from outside: events are
produced and the output topics read with python3-kafka, values decoded with
python3-avro from schemas/*.avsc (single-object header checked).

  - two jobs whose shards arrive interleaved give one catalog version and one
    SegmentsCommitted each, with the right segments, and exact recall;
  - a job whose shards arrive out of order and redelivered commits once;
  - after everything is finished, the group's committed offsets reach the
    end of the topic (nothing is left pending), and SIGTERM exits 0.
"""
import os
import re
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

root = os.path.join(h.TMP, "py_serve_jobs")
d = h.Dataset(root, rows=20000, dim=16, rpf=500, nlist=16)  # 40 fragments
for job in ("job-a", "job-b", "job-c"):
    d.train(job, copy_from=None if job == "job-a" else "job-a")  # one quantizer for the index

a = [d.stage("job-a", "a%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-15") for i in range(4)]
b = [d.stage("job-b", "b%d" % i, "%d-%d" % (16 + 4 * i, 19 + 4 * i), "16-27") for i in range(3)]
c = [d.stage("job-c", "c%d" % i, "%d-%d" % (28 + 4 * i, 31 + 4 * i), "28-39") for i in range(3)]

serve = h.Serve(["--partitions", "4", "--target-segment-bytes", "300K", "--log-level", "debug",
                 "--metrics-addr", "127.0.0.1:0"],
                os.path.join(root, "serve.log"), embedded=True)
prod = h.producer(serve.bootstrap)
check = h.check

# Interleaved: a0 b0 a1 b1 a2 b2 a3.
order = [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]
for ev, raw in order:
    h.send(prod, ev["staging_id"], raw)
# Out of order, with redeliveries (the same bytes, and a re-announcement with
# a new event id and time, which is the same shard).
c1_again = dict(c[1][0], event_id="job-c/c1-retry", staged_at_ms=c[1][0]["staged_at_ms"] + 5)
for ev, raw in [c[2], c[0], c[2], (None, h.encode_staged(c1_again)), c[1], c[0]]:
    h.send(prod, "job-c", raw)

done = lambda l: len({m[3]["staging_id"] for m in l}) >= 3  # noqa: E731
got = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted", until=done, timeout=60)
time.sleep(1.0)  # a second announcement would come right after the first
got = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted", timeout=10)
by_job = {}
for part, off, key, ev in got:
    by_job.setdefault(ev["staging_id"], []).append((key, ev))
check(sorted(by_job) == ["job-a", "job-b", "job-c"], "every job is announced: %s" % sorted(by_job))
for job, evs in by_job.items():
    check(len(evs) == 1, "%s is announced once (got %d)" % (job, len(evs)))
    key, ev = evs[0]
    check(key == job.encode(), "%s: the message key is the staging id" % job)
    check(ev["event_id"] == "%s@%d" % (job, ev["catalog_version"]),
          "%s: event_id is <staging_id>@<catalog_version> (%s)" % (job, ev["event_id"]))
    check(ev["index_name"] == "idx" and ev["dataset_uri"] == d.ds, "%s: dataset and index" % job)

cat = d.catalog()
check(cat is not None, "the catalog reads")
jobs = {j["staging_id"]: j for j in cat["jobs"]}
check(sorted(jobs) == ["job-a", "job-b", "job-c"], "the catalog holds each job once")
check(len({j["version"] for j in jobs.values()}) == 3, "one catalog version per job")
for job, evs in by_job.items():
    ev = evs[0][1]
    check(jobs[job]["version"] == ev["catalog_version"], "%s: the announced version is the catalog's" % job)
    check(sorted(s["segment_id"] for s in ev["segments"]) == sorted(jobs[job]["segment_ids"]),
          "%s: the announced segments are the catalog's" % job)

# Segments of job-a: 4 shards of ~130 KiB under a 300 KiB budget -> 2 segments
# of 2 shards, in fragment order.
ev_a = by_job["job-a"][0][1]
segs = sorted(ev_a["segments"], key=lambda s: min(h.roaring_read(s["fragments"])))
check([s["shard_ids"] for s in segs] == [["a0", "a1"], ["a2", "a3"]],
      "job-a's plan packs shards greedily in fragment order: %s" % [s["shard_ids"] for s in segs])
check([h.roaring_read(s["fragments"]) for s in segs] == [list(range(0, 8)), list(range(8, 16))],
      "job-a's segments carry their fragments")
check(ev_a["total_rows"] == 8000 and ev_a["num_shards"] == 4, "job-a: rows and shards")
check(sum(s["num_rows"] for s in ev_a["segments"]) == 8000, "job-a: segment rows add up")
ev_c = by_job["job-c"][0][1]
check(ev_c["num_shards"] == 3 and ev_c["total_rows"] == 6000,
      "job-c (out of order, redelivered) has its 3 shards once")
for s in ev_a["segments"] + ev_c["segments"]:
    path = os.path.join(d.ds, "_indices", s["path"])
    check(os.path.getsize(path) == s["bytes"], "segment %s exists with its size" % s["segment_id"])
leftovers = [f for f in os.listdir(os.path.join(d.ds, "_indices", "segments")) if ".tmp" in f]
check(not leftovers, "no temporary segment file is left: %s" % leftovers)

r = d.recall()
check(r["rows"] == 20000, "search sees all 20000 rows of the three jobs")
check(r["recall"] == 1.0, "IVF_FLAT with nprobe = nlist returns the exact neighbours (recall %.3f)" % r["recall"])

lines = serve.lines()
check(sum("event=redelivery" in l for l in lines) == 3, "the three redeliveries were recognised")
check(any("event=job_committed staging_id=job-a" in l and "finalize_ms=" in l for l in lines),
      "a structured log line reports each commit with its timings")

# Metrics and liveness, scraped over HTTP as Prometheus would.
serve.wait_log("event=metrics_serving", 10)
port = int(re.search(r"port=(\d+)", [l for l in serve.lines() if "metrics_serving" in l][0]).group(1))


def scrape(path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


status, text = scrape("/metrics")
vals = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, _, v = line.rpartition(" ")
        vals[name] = float(v)
sent = len(order) + 6
check(status == 200 and vals.get("segforge_jobs_committed_total") == 3,
      "/metrics counts the 3 committed jobs (%s)" % vals.get("segforge_jobs_committed_total"))
check(vals.get("segforge_events_received_total") == sent,
      "/metrics counts the %d events received (%s)" % (sent, vals.get("segforge_events_received_total")))
check(vals.get("segforge_build_duration_seconds_count") == 3 and vals.get("segforge_jobs_pending") == 0,
      "/metrics has one build observation per job and no job pending")
check(0 <= vals.get("segforge_poll_loop_age_seconds", -1) < 5, "the poll loop turns")
status, text = scrape("/healthz")
check(status == 200 and text.strip() == "ok", "/healthz says ok while serving (%d %s)" % (status, text.strip()))

# Offsets: everything is finished, so the group's offsets reach the end.
time.sleep(0.5)
committed, ends = h.group_offsets(serve.bootstrap)
tps = list(ends)
check(all(committed[tp] == ends[tp] for tp in tps),
      "committed offsets reach the end of every partition: %s vs %s" %
      ({tp.partition: committed[tp] for tp in tps}, {tp.partition: ends[tp] for tp in tps}))

check(serve.stop() == 0, "SIGTERM drains and exits 0")
check(any("event=stopped" in l for l in serve.lines()), "the processor logged its stop")
h.finish()
