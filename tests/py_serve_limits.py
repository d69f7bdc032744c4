#!/usr/bin/python3
"""`segforge serve` at the size limits of the broker (message.max.bytes set
low with -X so that small events hit it): a dead letter too large to publish
is cut down and delivered, never left to hold its partition's offset; an
announcement too large is a configuration error that stops the service
loudly with the job's offsets held, never a silent skip."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_limits")
d = h.Dataset(root, rows=8000, dim=16, rpf=500, nlist=16)
MAX = 2000


def committed_offsets(bootstrap, group="segforge-finalizer"):
    return h.group_offsets(bootstrap, group)


# ---- a dead letter larger than message.max.bytes ----------------------------------
serve = h.Serve(["--partitions", "1", "-X", "message.max.bytes=%d" % MAX],
                os.path.join(root, "serve.log"), embedded=True)
prod = h.producer(serve.bootstrap)
junk = b"\xc3\x01" + bytes((i * 7) & 0xFF for i in range(3 * MAX))  # UNKNOWN_SCHEMA
md = prod.send(h.STAGED, key=b"junk", value=junk).get(timeout=30)
got = h.read_topic(serve.bootstrap, h.REJECTED, "ShardRejected", until=lambda l: len(l) >= 1,
                   timeout=30)
if check(len(got) == 1, "the oversized dead letter is delivered cut down"):
    r = got[0][3]
    check(r["reason"] == "UNKNOWN_SCHEMA", "it keeps its reason (%s)" % r["reason"])
    check(r["source_offset"] == md.offset, "it names where the event was read")
    check(len(r["original_value"]) < len(junk) and junk.startswith(r["original_value"]),
          "original_value holds the first %d of %d bytes" % (len(r["original_value"]), len(junk)))
    check("cut down" in r["message"], "the message says it was cut down: %s" % r["message"][-160:])
time.sleep(0.5)
offs, ends = committed_offsets(serve.bootstrap)
check(all(offs[tp] == ends[tp] for tp in offs), "the offset moved past the oversized event")
check(serve.stop() == 0, "SIGTERM exits 0")

# ---- --max-pending-bytes: held event bytes pause the consumer ----------------------
# A job larger than the bound cannot complete: the consumer pauses with it
# open, its staging timeout still runs (only it can free that memory), and
# once it has failed the consumer resumes. The job expects a ninth fragment
# that never comes. The bound counts the memory a pending shard holds
# (its event decoded, its bytes, its path: some 700 bytes to 1.5 KB here),
# so 4 KiB is reached after a few of its eight shards.
d.train("mem")
mem = [d.stage("mem", "m%d" % i, str(i), "0-8", index="i-mem") for i in range(8)]
bound = 4096
serve = h.Serve(["--partitions", "1", "--max-pending-bytes", str(bound), "--staging-timeout", "3s"],
                os.path.join(root, "mem.log"), embedded=True)
prod = h.producer(serve.bootstrap)
for ev, raw in mem:
    h.send(prod, "mem", raw)
check(serve.wait_log("event=consumer_paused", timeout=30), "held bytes pause the consumer")
paused = [l for l in serve.lines() if "event=consumer_paused" in l]
held = int(paused[0].split("pending_bytes=")[1].split()[0]) if paused else 0
read = int(paused[0].split("pending=")[1].split()[0]) if paused else 0
check(bound <= held and 0 < read < len(mem),
      "it paused at the byte bound with the job open (%d of %d events read, %d bytes held, "
      "bound %d)" % (read, len(mem), held, bound))
check(serve.wait_log("reason=JOB_TIMEOUT", timeout=30),
      "the open job's timeout runs while memory is at its bound")
check(serve.wait_log("event=consumer_resumed", timeout=30), "and the consumer resumes")
check(serve.stop() == 0, "SIGTERM exits 0")

# ---- a SegmentsCommitted larger than message.max.bytes: loud and fatal --------------
# Sixteen shards and no budget make sixteen segments: more than 1000 bytes.
broker, boot = h.start_broker(partitions=1)
d.train("big")
shards = [d.stage("big", "b%02d" % i, str(i), "0-15", index="i-big") for i in range(16)]
serve = h.Serve(["--brokers", boot, "--group", "g-big", "-X", "fetch.wait.max.ms=5",
                 "-X", "message.max.bytes=1000"], os.path.join(root, "big.log"))
prod = h.producer(boot)
for ev, raw in shards:
    h.send(prod, "big", raw)
try:
    status = serve.p.wait(60)
except Exception:
    status = None
check(status == 1, "an announcement too large to publish stops serve with status 1 (got %s)"
      % status)
fatal = [l for l in serve.lines() if "event=fatal" in l]
check(fatal and "message.max.bytes" in fatal[0] and "--target-segment-bytes" in fatal[0],
      "the error names message.max.bytes and the segment budget: %s" % (fatal[:1],))
offs, ends = committed_offsets(boot, "g-big")
check(all(o == 0 for o in offs.values()), "the job's offsets are held for a restart")
broker.kill()
broker.wait()
h.finish()
