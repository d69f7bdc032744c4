#!/usr/bin/python3
"""Compaction by two `segforge serve` members of one consumer group
(docs/serve.md, "Compaction", "Which member compacts an index").

  1. Two members share a 4-partition ShardStaged topic (a broker of its own,
     `segforge broker`). Four indexes are named so that their ownership keys
     `<dataset>#<index>` map to the four partitions (CRC32 of the key modulo
     4, as librdkafka's consistent partitioner), so each member owns two.
     Every index gets jobs on partitions of both members; a last job of each
     goes to its owner. Then, for every index: it was compacted down to the
     policy's bound; every compaction of it (its `compaction_committed` log
     lines, carrying the partition) came from the member assigned that
     partition, and the other member skipped it (`compaction_not_owned`);
     the SegmentsCompacted events, read back with python3-kafka and decoded
     with python3-avro, are exactly those merges; a search at nprobe = nlist
     asking for every row returns each row exactly once.
  2. Two compactors race on one index: `segforge compact` runs in a loop
     (another policy, so that it picks other merges) while jobs of the index
     commit and its owner compacts it. The catalog reads at every moment,
     both compactors run merges (the loser of each race discards its own),
     and every row is there exactly once.
Builds are slowed (SF_FAULT=build.slow_partition) so that merges overlap.
"""
import json
import os
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_compact_group")
RPF = 100
NJOBS = 9  # per index in part 1, one fragment each, then a last one on the owner
NRACE = 16
d = h.Dataset(root, rows=(NRACE + 1) * RPF, dim=16, rpf=RPF, nlist=16)
DS = os.path.realpath(d.ds)
POLICY = ["--segments-per-tier", "3", "--max-merge-at-once", "3"]
ALLOWED = 3  # the policy's bound for segments far below the floor


def partition_of(index):
    return zlib.crc32(("%s#%s" % (DS, index)).encode()) % 4


# Four index names whose keys cover the four partitions.
names, n = {}, 0
while len(names) < 4:
    name = "ix%d" % n
    n += 1
    names.setdefault(partition_of(name), name)
INDEXES = [names[p] for p in range(4)]
RACE = "race"

d.train("q")
staged = {}  # (index, job) -> (staging id, raw event)
for ix in INDEXES + [RACE]:
    for j in range(NRACE if ix == RACE else NJOBS + 1):
        sid = "%s-%02d" % (ix, j)
        d.train(sid, copy_from="q")
        staged[(ix, j)] = (sid, d.stage(sid, "s0", str(j), str(j), index=ix)[1])

broker, B = h.start_broker(partitions=4)
KAFKA = ["--brokers", B, "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
         "-X", "fetch.wait.max.ms=5", "--log-level", "debug", "--max-merges", "2"] + POLICY
SLOW = {"SF_FAULT": "build.slow_partition"}
members = {m: h.Serve(KAFKA, os.path.join(root, m + ".log"), env=SLOW) for m in ("a", "b")}


def assignment(s):
    """The member's partitions after its last assignment (None before one)."""
    cur = None
    for line in s.lines():
        if "event=partitions_assigned" in line:
            cur = {int(x) for x in line.split("partitions=")[1].split()[0].split(",") if x}
        elif "event=partitions_revoked" in line:
            cur = None
    return cur


end = time.time() + 90
while time.time() < end:
    got = {m: assignment(s) for m, s in members.items()}
    if all(got.values()) and got["a"] | got["b"] == {0, 1, 2, 3} and not got["a"] & got["b"]:
        break
    time.sleep(0.2)
check(all(got.values()) and got["a"] | got["b"] == {0, 1, 2, 3} and not got["a"] & got["b"],
      "the two members share the four partitions (%s)" % got)
owner_of_part = {p: m for m, ps in got.items() for p in ps}
owner = {ix: owner_of_part[partition_of(ix)] for ix in INDEXES + [RACE]}
check(sorted(owner[ix] for ix in INDEXES) == ["a", "a", "b", "b"],
      "each member owns two of the four indexes (%s)" % owner)

prod = h.producer(B)


def send(ix, j, partition):
    sid, raw = staged[(ix, j)]
    prod.send(h.STAGED, key=sid.encode(), value=raw, partition=partition).get(timeout=30)


def committed(sids, timeout=240):
    want = set(sids)
    got = h.read_topic(B, h.COMMITTED, "SegmentsCommitted",
                       until=lambda l: want <= {m[3]["staging_id"] for m in l}, timeout=timeout)
    return want <= {m[3]["staging_id"] for m in got}


def segments(index):
    cat = d.catalog()
    if not cat:
        return None
    return next((ix["segments"] for ix in cat["indexes"] if ix["name"] == index), [])


def every_row_once(index, nfrags):
    """One query asking for every row at nprobe = nlist: each row id exactly once."""
    rows = nfrags * RPF
    p = h.run([h.SEGFORGE, "search", "--dataset", d.ds, "--index", index, "--queries",
               os.path.join(d.gen, "query.fvecs"), "--k", str(rows), "--nprobe", str(d.nlist),
               "--json"])
    res = json.loads(p.stdout)
    ids = res["results"][0]["ids"]
    want = sorted((f << 32) | o for f in range(nfrags) for o in range(RPF))
    return res["rows"] == rows and sorted(ids) == want


def run_ended(member, index, last_sid, left_ok=False):
    """The member's compaction of index, queued by the commit of last_sid,
    ended: the policy wanted no more (or, left_ok, it left the index to a
    racing compactor)."""
    lines = members[member].lines()
    at = next((i for i, l in enumerate(lines)
               if "event=job_committed staging_id=%s " % last_sid in l), None)
    return at is not None and any(
        ("event=compaction_idle" in l or (left_ok and "event=compaction_left" in l)) and
        "index=%s " % index in l for l in lines[at:])


# ---- 1. each index compacted by its owner -----------------------------------------
parts_of = {m: sorted(ps) for m, ps in got.items()}
for j in range(NJOBS):  # jobs alternate between the members' partitions
    for ix in INDEXES:
        m = "ab"[j % 2]
        send(ix, j, parts_of[m][j // 2 % len(parts_of[m])])
check(committed([staged[(ix, j)][0] for ix in INDEXES for j in range(NJOBS)]),
      "%d jobs of %d indexes are committed by the group" % (4 * NJOBS, len(INDEXES)))
for ix in INDEXES:  # the last job of each index on its owner: its commit runs the policy
    send(ix, NJOBS, parts_of[owner[ix]][0])
check(committed([staged[(ix, NJOBS)][0] for ix in INDEXES]), "the last jobs are committed")
def all_ended():
    return all(run_ended(owner[ix], ix, staged[(ix, NJOBS)][0]) for ix in INDEXES)


end = time.time() + 180
while time.time() < end and not all_ended():
    time.sleep(0.2)
check(all_ended(), "each owner ran the policy of its indexes to the end after their last job")

evs = h.read_topic(B, h.COMPACTED, "SegmentsCompacted", timeout=30)
for ix in INDEXES:
    own, other = owner[ix], "b" if owner[ix] == "a" else "a"
    done = {}
    for m in ("a", "b"):
        done[m] = [l for l in members[m].lines()
                   if "event=compaction_committed" in l and "index=%s " % ix in l]
    segs = segments(ix)
    check(any(s["segment_id"].startswith("compact-") for s in segs) and len(segs) <= ALLOWED,
          "%s: compacted from %d to %d segments (the policy allows %d)"
          % (ix, NJOBS + 1, len(segs), ALLOWED))
    check(done[own] and not done[other],
          "%s (partition %d): its %d merges came from its owner %s, none from %s"
          % (ix, partition_of(ix), len(done[own]), own, len(done[other])))
    check(all("partition=%d " % partition_of(ix) in l for l in done[own]),
          "%s: the owner's log names the owned partition %d" % (ix, partition_of(ix)))
    check(any("event=compaction_not_owned" in l and "index=%s " % ix in l
              for l in members[other].lines()),
          "%s: %s committed jobs of it and left its compaction to %s" % (ix, other, own))
    merged = sorted((l.split(" merged=")[1].split()[0], int(l.split(" version=")[1].split()[0]))
                    for l in done[own])
    announced = sorted((e[3]["added_segments"][0]["segment_id"], e[3]["catalog_version"])
                       for e in evs if e[3]["index_name"] == ix)
    check(merged == announced,
          "%s: the SegmentsCompacted events are exactly the owner's merges (%d)"
          % (ix, len(announced)))
    check(all(e[2] == ("%s#%s" % (DS, ix)).encode() for e in evs if e[3]["index_name"] == ix),
          "%s: its events are keyed by its ownership key" % ix)
    check(every_row_once(ix, NJOBS + 1),
          "%s: a search for every row at nprobe = nlist returns each of its %d rows once"
          % (ix, (NJOBS + 1) * RPF))

# ---- 2. segforge compact racing the owner of one index ----------------------------
stop = threading.Event()
cli = {"runs": 0, "merges": 0, "discarded": 0, "failed": []}
reads = {"ok": 0, "bad": []}


def compact_loop():
    while not stop.is_set():
        p = h.subprocess.run([h.SEGFORGE, "compact", "--dataset", d.ds, "--index", RACE,
                              "--segments-per-tier", "2", "--max-merge-at-once", "2", "--json"],
                             capture_output=True, timeout=300, env=dict(os.environ, **SLOW))
        if p.returncode == 0:
            o = json.loads(p.stdout)
            cli["runs"] += 1
            cli["merges"] += o["merges"]
            cli["discarded"] += o["discarded"]
        elif b"has no index" not in p.stderr:  # before the first job commits
            cli["failed"].append(p.stderr.decode(errors="replace")[-300:])
        time.sleep(0.05)


def read_loop():
    while not stop.is_set():
        p = h.subprocess.run([h.SEGFORGE, "inspect", "--dataset", d.ds, "--json"],
                             capture_output=True, timeout=60)
        if p.returncode == 0 and json.loads(p.stdout)["indexes"]:
            reads["ok"] += 1
        else:
            reads["bad"].append(p.stderr.decode(errors="replace")[-300:])
        time.sleep(0.05)


threads = [threading.Thread(target=compact_loop), threading.Thread(target=read_loop)]
for t in threads:
    t.start()
for j in range(NRACE):
    m = "ab"[j % 2] if j < NRACE - 1 else owner[RACE]  # the last on the owner
    send(RACE, j, parts_of[m][0])
    time.sleep(0.4)
check(committed([staged[(RACE, j)][0] for j in range(NRACE)]), "%d jobs of %s commit" % (NRACE, RACE))
race_run_ended = lambda: run_ended(owner[RACE], RACE, staged[(RACE, NRACE - 1)][0], True)  # noqa


end = time.time() + 120
while time.time() < end and not race_run_ended():
    time.sleep(0.2)
check(race_run_ended(), "the owner of %s ran its compaction after the last commit" % RACE)
stop.set()
for t in threads:
    t.join(300)
serve_done = [l for l in members[owner[RACE]].lines()
              if "event=compaction_committed" in l and "index=%s " % RACE in l]
serve_lost = [l for m in members.values() for l in m.lines()
              if "event=compaction_discarded" in l and "index=%s " % RACE in l]
print("race: serve %d merges, %d discarded; segforge compact %d runs, %d merges, %d discarded"
      % (len(serve_done), len(serve_lost), cli["runs"], cli["merges"], cli["discarded"]))
check(not cli["failed"], "segforge compact never failed while racing: %s" % cli["failed"][:2])
check(reads["ok"] > 0 and not reads["bad"],
      "the catalog read every time (%d reads): %s" % (reads["ok"], reads["bad"][:2]))
# Which compactor wins each race depends on timing: that both ran merges
# of the index (committed, or discarded on losing) is what makes it a race.
check(len(serve_done) + len(serve_lost) >= 1 and cli["merges"] >= 1,
      "both compactors ran merges of %s (serve %d committed + %d discarded, "
      "segforge compact %d committed)"
      % (RACE, len(serve_done), len(serve_lost), cli["merges"]))
h.run([h.SEGFORGE, "compact", "--dataset", d.ds, "--index", RACE])  # whatever is left
check(every_row_once(RACE, NRACE),
      "%s: a search for every row at nprobe = nlist returns each of its %d rows once"
      % (RACE, NRACE * RPF))
for m, s in members.items():
    check(s.stop() == 0, "member %s stops cleanly" % m)
left = [f for f in os.listdir(os.path.join(d.ds, "_indices", "segments")) if ".tmp." in f]
check(not left, "no temporary segment file is left behind: %s" % left)
h.finish()
