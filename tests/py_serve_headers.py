#!/usr/bin/python3
"""Kafka conventions of serve's output, read back with python3-kafka: a dead
letter carries Kafka Connect's dead-letter headers (__connect.errors.topic,
.partition, .offset, .exception.class.name, .exception.message, ...) and
keeps its event's key, headers and timestamp; a W3C traceparent header on
ShardStaged is carried to the SegmentsCommitted of its job and to its dead
letters (an event without one gets its job's). A malformed traceparent is
not a trace context (W3C Trace Context: an invalid one is dropped, not
propagated): the job's is the first valid one, and a job with none valid
announces none."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_headers")
d = h.Dataset(os.path.join(root, "a"), rows=4000, dim=16, rpf=500, nlist=16)
for job in ("t1", "t2", "t3", "t4", "t5"):
    d.train(job)
t1 = [d.stage("t1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
t2 = [d.stage("t2", "s0", "0-3", "0-7"), d.stage("t2", "s1", "3-7", "0-7")]  # overlap on 3
bad, _ = d.stage("t3", "s0", "0-3", "0-7")
t4 = [d.stage("t4", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7", index="i4")
      for i in range(2)]
t5 = [d.stage("t5", "s0", "0-7", "0-7", index="i5")]  # own indexes: no overlap with t1
bad_raw = h.encode_staged(dict(bad, shard_path="nowhere.sfshard", event_id="t3/missing"))
# The same shard missing, sent again without a key: its dead letter has none.
nokey_raw = h.encode_staged(dict(bad, shard_path="nowhere.sfshard", event_id="t3/nokey",
                                 shard_id="s9"))

TP1 = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP2 = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP3 = b"00-11111111111111111111111111111111-2222222222222222-01"
TP4 = b"00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-00"
# Not trace contexts: a zero trace id, upper-case hex, version ff, a version
# 00 with more after it, and 64 KiB of nonsense.
BAD_TPS = [b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
           b"00-4BF92F3577B34DA6A3CE929D0E0E4736-B7AD6B7169203331-01",
           b"ff-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
           TP4 + b"-extra", b"x" * 65536]

broker, boot = h.start_broker(partitions=2)
serve = h.Serve(["--brokers", boot, "--group", "g-headers", "-X", "fetch.wait.max.ms=5",
                 "--dataset-root", root], os.path.join(root, "serve.log"))
prod = h.producer(boot)
for ev, raw in t1:
    prod.send(h.STAGED, key=b"t1", value=raw, headers=[("traceparent", TP1)]).get(30)
# t2: only its first event has a trace context; its second fails the job.
prod.send(h.STAGED, key=b"t2", value=t2[0][1], headers=[("traceparent", TP3)]).get(30)
prod.send(h.STAGED, key=b"t2", value=t2[1][1]).get(30)
# t4: its first event's traceparent is malformed, its second's is valid.
prod.send(h.STAGED, key=b"t4", value=t4[0][1], headers=[("traceparent", BAD_TPS[0])]).get(30)
prod.send(h.STAGED, key=b"t4", value=t4[1][1], headers=[("traceparent", TP4)]).get(30)
# t5: one event, only malformed traceparents.
prod.send(h.STAGED, key=b"t5", value=t5[0][1],
          headers=[("traceparent", v) for v in BAD_TPS[1:]]).get(30)
TS = 1700000000123
md = prod.send(h.STAGED, key=b"my-key", value=bad_raw, timestamp_ms=TS,
               headers=[("traceparent", TP2), ("x-app", b"worker-7"),
                        ("x-empty", b"")]).get(30)


prod.send(h.STAGED, key=None, value=nokey_raw, partition=md.partition).get(30)


def read_all(topic, want, timeout=60):
    c = KafkaConsumer(bootstrap_servers=boot, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=500, fetch_max_wait_ms=50,
                      api_version_auto_timeout_ms=10000)
    end = time.time() + timeout
    parts = None
    while not parts and time.time() < end:
        parts = c.partitions_for_topic(topic)
        time.sleep(0.1)
    tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = []
    while len(out) < want and time.time() < end:
        for msgs in c.poll(timeout_ms=200).values():
            out.extend(msgs)
    c.close()
    return out


committed = read_all(h.COMMITTED, 3)
byjob = {h.decode(m.value, "SegmentsCommitted")["staging_id"]: m for m in committed}
check(sorted(byjob) == ["t1", "t4", "t5"], "t1, t4 and t5 are committed and announced: %s"
      % sorted(byjob))
if "t1" in byjob:
    hd = dict(byjob["t1"].headers)
    check(hd.get("traceparent") == TP1,
          "SegmentsCommitted carries the traceparent of its job's events: %r" % hd)
if "t4" in byjob:
    tps = [v for k, v in byjob["t4"].headers if k == "traceparent"]
    check(tps == [TP4], "a malformed traceparent is skipped for the job's first valid "
          "one: %r" % [v[:80] for v in tps])
if "t5" in byjob:
    tps = [v for k, v in byjob["t5"].headers if k == "traceparent"]
    check(tps == [], "a job with no valid traceparent announces none: %r"
          % [v[:80] for v in tps])

dead = read_all(h.REJECTED, 4)
by = {}
for m in dead:
    r = h.decode(m.value, "ShardRejected")
    by[(r["staging_id"], r["shard_id"])] = (m, r, dict(m.headers))
check(len(dead) == 4 and
      set(by) == {("t2", "s0"), ("t2", "s1"), ("t3", "s0"), ("t3", "s9")},
      "four dead letters: t2's two events, t3's two: %s" % sorted(by))
m9 = by.get(("t3", "s9"), (None,))[0]
check(m9 is not None and m9.key is None,
      "an event without a key: its dead letter has none either: %r"
      % (m9.key if m9 else "no dead letter"))

m, r, hd = by.get(("t3", "s0"), (None, None, {}))
if m:
    check(m.key == b"my-key", "the dead letter keeps its event's key: %r" % m.key)
    check(m.timestamp == TS, "and its timestamp: %d" % m.timestamp)
    check(hd.get("x-app") == b"worker-7" and hd.get("x-empty") == b"" and
          hd.get("traceparent") == TP2, "and its headers, traceparent among them: %r" % hd)
    check(r["original_value"] == bad_raw, "original_value is the event's value, byte for byte")
    check(hd.get("__connect.errors.topic") == h.STAGED.encode() and
          hd.get("__connect.errors.partition") == str(md.partition).encode() and
          hd.get("__connect.errors.offset") == str(md.offset).encode(),
          "Connect's headers name the source topic, partition and offset: %r" % hd)
    check(hd.get("__connect.errors.exception.class.name") == b"segforge.reason.MISSING_FILE"
          and hd.get("segforge.reason") == b"MISSING_FILE",
          "the reason, as Connect's exception class and as segforge.reason")
    check(hd.get("__connect.errors.exception.message") == r["message"].encode() and
          b"does not exist" in hd.get("__connect.errors.exception.message", b""),
          "the exception message is the dead letter's message")
    check(hd.get("__connect.errors.stage") == b"TASK_PUT" and
          hd.get("__connect.errors.connector.name") == b"g-headers" and
          "__connect.errors.class.name" in hd and "__connect.errors.task.id" in hd,
          "stage, connector name (the group), class name and task id")

m1, r1, hd1 = by.get(("t2", "s1"), (None, None, {}))
m0, r0, hd0 = by.get(("t2", "s0"), (None, None, {}))
if m1 and m0:
    check(r1["reason"] == "FRAGMENT_OVERLAP" and r0["reason"] == "JOB_FAILED",
          "t2 failed: the trigger and the other event")
    check(hd0.get("traceparent") == TP3 and hd1.get("traceparent") == TP3,
          "the event without a trace context gets its job's: %r" % hd1.get("traceparent"))
    check(m1.key == b"t2" and m0.key == b"t2", "their keys are kept")
    check(hd1.get("__connect.errors.exception.class.name") ==
          b"segforge.reason.FRAGMENT_OVERLAP", "the trigger's reason in Connect's header")

check(serve.stop() == 0, "serve exits 0 on SIGTERM")
broker.kill()
h.finish()
