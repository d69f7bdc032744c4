#!/usr/bin/python3
"""`segforge serve` keys its jobs by dataset and staging id, the dataset in
its canonical form (docs/events.md, "Datasets"), seen from outside with
python3-kafka and python3-avro:

  - two datasets that both use the staging id `nightly` build two jobs: one
    commits while the other is still open, then the other commits; each is
    announced with its own dataset_uri, and each catalog holds its job;
  - an event that contradicts a committed job (a new shard id, the same
    shard id with other content, other expected fragments) is dead-lettered
    as COMMITTED_CONFLICT, while a plain redelivery is not;
  - events naming one dataset as /p, file:///p and /p/ (and through a link)
    form one job that commits, announced under the canonical path.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_datasets")
A = h.Dataset(os.path.join(root, "a"), rows=4000, dim=16, rpf=500, nlist=8)  # 8 fragments
B = h.Dataset(os.path.join(root, "b"), rows=4000, dim=16, rpf=500, nlist=8)
C = h.Dataset(os.path.join(root, "c"), rows=4000, dim=16, rpf=500, nlist=8)
for d in (A, B, C):
    d.train("nightly")
a = [A.stage("nightly", "w%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
b = [B.stage("nightly", "w%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
c = [C.stage("nightly", "w%d" % i, "%d-%d" % (3 * i, min(3 * i + 2, 7)), "0-7")
     for i in range(3)]

serve = h.Serve(["--partitions", "2", "--staging-timeout", "60s", "--log-level", "debug"],
                os.path.join(root, "serve.log"), embedded=True)
prod = h.producer(serve.bootstrap)


def committed(n, timeout=60):
    return h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted",
                        until=lambda l: len(l) >= n, timeout=timeout)


# ---- one staging id, two datasets --------------------------------------------------
h.send(prod, "nightly", a[0][1])   # A opens
h.send(prod, "nightly", b[0][1])   # B opens beside it
h.send(prod, "nightly", b[1][1])   # B completes and commits while A is open
got = committed(1)
check(len(got) == 1 and got[0][3]["dataset_uri"] == os.path.realpath(B.ds),
      "B commits while A's job with the same staging id is open")
h.send(prod, "nightly", a[1][1])   # A completes after B committed: not late
got = committed(2)
by_ds = {ev["dataset_uri"]: ev for _, _, _, ev in got}
check(sorted(by_ds) == sorted([os.path.realpath(A.ds), os.path.realpath(B.ds)]),
      "both datasets are announced: %s" % sorted(by_ds))
for d in (A, B):
    ev = by_ds.get(os.path.realpath(d.ds))
    if ev:
        check(ev["staging_id"] == "nightly" and ev["num_shards"] == 2 and
              ev["total_rows"] == 4000,
              "%s: staging id, shards and rows of its own job" % d.root)
    cat = d.catalog()
    jobs = [j["staging_id"] for j in cat.get("jobs", [])] if cat else []
    check(jobs == ["nightly"], "%s: its catalog holds its job (%s)" % (d.root, jobs))
    line = [l for l in serve.lines() if "event=job_committed" in l and
            ' dataset=%s ' % os.path.realpath(d.ds) in l]  # bare: the path needs no quotes
    check(len(line) == 1, "%s: the job_committed log line names its dataset" % d.root)

# ---- contradicting a committed job ---------------------------------------------------
ev0 = a[0][0]
contradictions = {
    "a new shard id": dict(ev0, shard_id="w9", event_id="nightly/w9"),
    "the same shard id with other content": dict(ev0, num_rows=ev0["num_rows"] + 1,
                                                 event_id="nightly/w0-other"),
    "other expected fragments": dict(ev0, expected_fragments="0-8",
                                     event_id="nightly/w0-exp"),
}
sent = {}
for what, ev in contradictions.items():
    raw = h.encode_staged(ev)
    sent[raw] = what
    h.send(prod, "nightly", raw)
h.send(prod, "nightly", a[0][1])  # a plain redelivery: no dead letter
h.send(prod, "nightly", h.encode_staged(dict(ev0, event_id="nightly/w0-again",
                                             staged_at_ms=ev0["staged_at_ms"] + 9)))
rej = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected",
                   until=lambda l: len(l) >= len(contradictions), timeout=30)
time.sleep(1.0)  # a dead letter for the redeliveries would come right after
rej = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected", timeout=10)
check(len(rej) == len(contradictions),
      "one dead letter per contradiction, none for redeliveries (got %d)" % len(rej))
for _, _, _, r in rej:
    what = sent.get(r["original_value"], "?")
    check(r["reason"] == "COMMITTED_CONFLICT" and r["staging_id"] == "nightly",
          "%s: dead-lettered as %s" % (what, r["reason"]))
    check("committed" in r["message"] and "new staging id" in r["message"],
          "%s: the message says what to do: %s" % (what, r["message"]))
check(len(committed(2, timeout=5)) == 2, "the committed jobs are not announced again")

# ---- three spellings of one dataset --------------------------------------------------
link = os.path.join(root, "c-link")
if not os.path.islink(link):
    os.symlink(C.ds, link)
spellings = [C.ds, "file://" + C.ds, C.ds + "/"]
for (ev, _), uri in zip(c, spellings):
    h.send(prod, "nightly", h.encode_staged(dict(ev, dataset_uri=uri)))
h.send(prod, "nightly", h.encode_staged(dict(c[0][0], dataset_uri=link)))  # redelivery
got = committed(3)
evs = [ev for _, _, _, ev in got if ev["dataset_uri"] == os.path.realpath(C.ds)]
check(len(evs) == 1 and evs[0]["num_shards"] == 3,
      "/p, file:///p and /p/ form one job of three shards that commits")
rej = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected", timeout=5)
check(len(rej) == len(contradictions),
      "no event of the spelled job is dead-lettered: %s" % [r[3]["reason"] for r in rej])
check(not any("PARAM_MISMATCH" in l for l in serve.lines()), "no PARAM_MISMATCH in the log")
check(serve.stop() == 0, "SIGTERM exits 0")
h.finish()
