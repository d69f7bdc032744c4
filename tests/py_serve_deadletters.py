#!/usr/bin/python3
"""Dead letters of `segforge serve`: one bad event (or failed job) of every
reason, produced raw with python3-kafka between the shards of a good job.
Every one must land on the dead-letter topic as a ShardRejected (decoded with
python3-avro) carrying its reason, the original bytes and where it was read;
the good job must commit; offsets must move past the bad events; and a
failed staging id must stay failed across a restart (its marker file).
"""
import os
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_deadletters")
d = h.Dataset(root, rows=8000, dim=16, rpf=500, nlist=16)  # 16 fragments
d.train("ok")
for job in ("bad", "f", "g", "hh", "t", "x"):
    d.train(job, copy_from="ok")

ok = [d.stage("ok", "ok%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-15") for i in range(4)]
# Single bad events of staging id "bad" (each is rejected alone).
good_bad, _ = d.stage("bad", "s0", "0-3", "0-7", index="other")
corrupt_path = os.path.join(d.staging("bad"), "corrupt.sfshard")
shutil.copy(os.path.join(d.staging("bad"), "s0.sfshard"), corrupt_path)
with open(corrupt_path, "r+b") as f:  # a bit flip in the header: its CRC fails
    f.seek(12)
    b = f.read(1)
    f.seek(12)
    f.write(bytes([b[0] ^ 0x40]))
os.symlink("/etc/passwd", os.path.join(d.staging("bad"), "escape.sfshard"))


outside = os.path.join(h.TMP, "py_serve_deadletters_outside")
os.makedirs(outside, exist_ok=True)
# A second root from a --config file (segforge.dataset.roots): a dataset
# there passes the root check and fails only for its missing shard.
cfgroot = os.path.join(h.TMP, "py_serve_deadletters_cfgroot")
os.makedirs(os.path.join(cfgroot, "ds", "_indices", "_staging", "cf"), exist_ok=True)
with open(os.path.join(root, "serve.conf"), "w") as f:
    f.write("# a deployment's configuration file\nsegforge.dataset.roots=%s\n" % cfgroot)
if not os.path.islink(os.path.join(root, "link-out")):
    os.symlink(outside, os.path.join(root, "link-out"))


def variant(**kw):
    ev = dict(good_bad)
    ev.update(kw)
    return ev, h.encode_staged(ev)


singles = {
    "DECODE_ERROR": (None, b"\xc3\x01garbage"),
    "UNKNOWN_SCHEMA": (None, b"\xc3\x01" + struct.pack("<Q", 0x1234) + b"\x00" * 20),
    "INVALID_FIELD": variant(shard_id="inv", dim=0),
    "PATH_ESCAPE": variant(shard_id="esc", shard_path="escape.sfshard"),
    "MISSING_FILE": variant(shard_id="missing", shard_path="nope.sfshard"),
    "CORRUPT_FILE": variant(shard_id="corrupt", shard_path="corrupt.sfshard"),
    "CHECKSUM_MISMATCH": variant(shard_id="cks", quantizer_checksum="0x0123456789abcdef"),
    "PARAM_MISMATCH": variant(shard_id="pm", metric="DOT"),
    # Paths that cannot be resolved are the event's fault, never a crash loop.
    "NOT_A_DIR": variant(staging_id="nd", shard_id="nd", dataset_uri="/etc/passwd/x"),
    "LONG_NAME": variant(shard_id="long", shard_path="sub/" + "s" * 300),
    "A_DIRECTORY": variant(shard_id="dir", shard_path="adir"),
    # The processor serves the datasets under --dataset-root only: one
    # elsewhere, and one reached through a link that leads out of the root.
    "OUTSIDE_ROOT": variant(staging_id="out", shard_id="out", dataset_uri=outside),
    "LINK_OUT": variant(staging_id="lo", shard_id="lo", dataset_uri=os.path.join(root, "link-out")),
    "CONFIG_ROOT": variant(staging_id="cf", shard_id="cf", dataset_uri=os.path.join(cfgroot, "ds")),
}
os.makedirs(os.path.join(d.staging("bad"), "adir"))
os.makedirs(os.path.join(d.staging("bad"), "sub"))
# Jobs that fail: their events are all dead-lettered.
f0, f1 = d.stage("f", "f0", "0-3", "0-7", index="i-f"), d.stage("f", "f1", "3-7", "0-7", index="i-f")
g0 = d.stage("g", "g0", "0-3", "0-7", index="i-g")
g0x = dict(g0[0], num_rows=g0[0]["num_rows"] - 1)
h0, h1 = d.stage("hh", "h0", "0-3", "0-7", index="i-h"), d.stage("hh", "h1", "4-7", "0-7", index="i-h2")
t0 = d.stage("t", "t0", "0-3", "0-7", index="i-t")
# Fragments already committed by job "ok" in index "idx": the commit refuses.
x0 = d.stage("x", "x0", "0-3", "0-3")

serve = h.Serve(["--partitions", "2", "--staging-timeout", "4s", "--dataset-root", root,
                 "--config", os.path.join(root, "serve.conf")],
                os.path.join(root, "serve.log"), embedded=True)
prod = h.producer(serve.bootstrap)
sent = {}


def send(key, raw, tag):
    md = prod.send(h.STAGED, key=key.encode(), value=raw).get(timeout=30)
    sent[tag] = (md.partition, md.offset, raw)


send("ok", ok[0][1], "ok0")
for reason, (ev, raw) in singles.items():
    send(ev["staging_id"] if ev else "bad", raw, reason)
send("ok", ok[1][1], "ok1")
send("f", f0[1], "f0")
send("f", f1[1], "f1")               # overlaps f0: FRAGMENT_OVERLAP, f0 JOB_FAILED
send("g", g0[1], "g0")
send("g", h.encode_staged(g0x), "g0x")  # same shard id, other content
send("hh", h0[1], "h0")
send("hh", h1[1], "h1")               # another index name: PARAM_MISMATCH
send("t", t0[1], "t0")                # never completed: JOB_TIMEOUT
send("ok", ok[2][1], "ok2")
send("ok", ok[3][1], "ok3")
committed = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted",
                         until=lambda l: len(l) >= 1, timeout=60)
check([m[3]["staging_id"] for m in committed] == ["ok"], "the good job commits among the bad events")
send("x", x0[1], "x0")                # overlaps job ok's committed segments
send("f", f0[1], "f0-late")           # the job failed: JOB_FAILED

want = {  # tag -> (reason, staging_id, shard_id)
    "DECODE_ERROR": ("DECODE_ERROR", None, None),
    "UNKNOWN_SCHEMA": ("UNKNOWN_SCHEMA", None, None),
    "INVALID_FIELD": ("INVALID_FIELD", None, None),
    "PATH_ESCAPE": ("PATH_ESCAPE", "bad", "esc"),
    "MISSING_FILE": ("MISSING_FILE", "bad", "missing"),
    "CORRUPT_FILE": ("CORRUPT_FILE", "bad", "corrupt"),
    "CHECKSUM_MISMATCH": ("CHECKSUM_MISMATCH", "bad", "cks"),
    "PARAM_MISMATCH": ("PARAM_MISMATCH", "bad", "pm"),
    "NOT_A_DIR": ("MISSING_FILE", "nd", "nd"),
    "LONG_NAME": ("INVALID_FIELD", "bad", "long"),
    "A_DIRECTORY": ("CORRUPT_FILE", "bad", "dir"),
    "OUTSIDE_ROOT": ("PATH_ESCAPE", "out", "out"),
    "LINK_OUT": ("PATH_ESCAPE", "lo", "lo"),
    "CONFIG_ROOT": ("MISSING_FILE", "cf", "cf"),
    "f1": ("FRAGMENT_OVERLAP", "f", "f1"),
    "f0": ("JOB_FAILED", "f", "f0"),
    "g0x": ("DUPLICATE_CONFLICT", "g", "g0"),
    "g0": ("JOB_FAILED", "g", "g0"),
    "h1": ("PARAM_MISMATCH", "hh", "h1"),
    "h0": ("JOB_FAILED", "hh", "h0"),
    "t0": ("JOB_TIMEOUT", "t", "t0"),
    "x0": ("COMMIT_CONFLICT", "x", "x0"),
    "f0-late": ("JOB_FAILED", "f", "f0"),
}
got = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected",
                   until=lambda l: len(l) >= len(want), timeout=60)
time.sleep(0.5)
got = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected", timeout=10)
by_pos = {(m[3]["source_partition"], m[3]["source_offset"]): m[3] for m in got}
for tag, (reason, sid, shid) in want.items():
    part, off, raw = sent[tag]
    r = by_pos.get((part, off))
    if not check(r is not None, "%s: a dead letter for the event at %d/%d" % (tag, part, off)):
        continue
    check(r["reason"] == reason, "%s: reason %s (got %s: %s)" % (tag, reason, r["reason"], r["message"]))
    check(r["original_value"] == raw, "%s: the original bytes are kept" % tag)
    check(r["source_topic"] == h.STAGED, "%s: the source topic is named" % tag)
    check(len(r["message"]) > 10, "%s: a message says what to fix" % tag)
    if tag in ("OUTSIDE_ROOT", "LINK_OUT"):
        check("--dataset-root" in r["message"], "%s: the message names the flag: %s" % (tag, r["message"]))
    if sid:
        check(r["staging_id"] == sid and r["shard_id"] == shid, "%s: staging and shard ids" % tag)
check(len(got) == len(want), "no other dead letter: %d for %d bad events" % (len(got), len(want)))

for job in ("f", "g", "hh", "t", "x"):
    check(os.path.exists(os.path.join(d.ds, "_indices", "_failed", job)),
          "failed job %s has its marker" % job)
cat = d.catalog()
check([j["staging_id"] for j in cat["jobs"]] == ["ok"], "only the good job is in the catalog")

time.sleep(0.5)
offs, ends = h.group_offsets(serve.bootstrap)
check(all(offs[tp] == ends[tp] for tp in ends), "offsets moved past every bad event")
check(serve.stop() == 0, "SIGTERM exits 0")

# A restart (its own embedded broker, so nothing is re-read): the marker
# keeps the staging id failed, even for an event that alone would be fine.
serve2 = h.Serve(["--partitions", "1"], os.path.join(root, "serve2.log"), embedded=True)
prod = h.producer(serve2.bootstrap)
prod.send(h.STAGED, key=b"f", value=f0[1]).get(timeout=30)
again = h.read_topic(serve2.bootstrap, h.REJECTED, "ShardRejected", until=lambda l: len(l) >= 1,
                     timeout=30)
check(len(again) == 1 and again[0][3]["reason"] == "JOB_FAILED",
      "after a restart the failed staging id is still refused")
check(serve2.stop() == 0, "the second processor exits 0")
h.finish()
