#!/usr/bin/python3
"""`segforge stage --publish` through `segforge broker`, read back by
independent clients.

A `segforge broker` runs in the background; shards are staged and announced
with `segforge stage --publish` (and one with examples/worker_publish.c);
then python3-kafka (and kcat) read the topic, and python3-avro decodes each
value with the schemas/*.avsc files after checking the single-object header.
Checked: key = staging_id and its partition is the one Java clients pick
(murmur2), every field against the shard file itself (fragments decoded
from portable roaring, quantizer checksum, rows, bytes, path), the
deterministic event_id of a re-announcement, and the command's refusals
(bad -X, shard outside the staging root, unreachable broker).

Bounded in time (an alarm ends it) and self-cleaning (the broker is
killed on every exit). Environment: SEGFORGE, SF_SRC, SF_TEST_TMP.
"""
import atexit
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_events_interop import SCHEMAS, avro_decode, crc64_avro, roaring_read  # noqa: E402

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402

SEGFORGE = os.environ.get("SEGFORGE", "segforge")
TMP = os.path.join(os.environ.get("SF_TEST_TMP", "/tmp"), "py_publish_interop")
TOPIC = "segforge.shards.staged"
PARTITIONS = 3
failures = []
broker = None


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def stop_broker():
    if broker and broker.poll() is None:
        broker.terminate()
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


def on_alarm(signum, frame):
    stop_broker()
    print("FAIL the test ran out of time", flush=True)
    os._exit(1)


def sf(*args, expect=0, timeout=60):
    p = subprocess.run([SEGFORGE] + list(args), capture_output=True, timeout=timeout)
    if expect is not None and p.returncode != expect:
        raise SystemExit("segforge %s: exit %d, expected %d\n%s" % (
            " ".join(args), p.returncode, expect, p.stderr.decode()))
    return p


def start_broker():
    global broker
    broker = subprocess.Popen([SEGFORGE, "broker", "--partitions", str(PARTITIONS)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ready, _, _ = select.select([broker.stdout], [], [], 20)
    if not ready:
        raise SystemExit("segforge broker printed no address within 20 s")
    return broker.stdout.readline().decode().strip()


def stage(ds, staging_id, shard_id, frags, brokers, *extra, expect=0):
    root = os.path.join(ds, "_indices", "_staging", staging_id)
    return sf("stage", "--vectors", os.path.join(TMP, "gen", "base.fvecs"), "--staging", root,
              "--rows-per-fragment", "200", "--fragments", frags, "--shard-id", shard_id,
              "--publish", "--brokers", brokers, "--dataset-uri", ds, "--index-name", "idx",
              "--column", "emb", "--staging-id", staging_id, "--expected-fragments", "0-9",
              "--json", *extra, expect=expect)


def read_topic(brokers, want, seconds=20):
    c = KafkaConsumer(bootstrap_servers=brokers, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=seconds * 1000, api_version_auto_timeout_ms=10000)
    parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    got = []
    for m in c:
        got.append(m)
        if len(got) >= want:
            break
    c.close()
    return got


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(240)
    atexit.register(stop_broker)
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    ds = os.path.join(TMP, "ds")
    sf("gen", "--out", os.path.join(TMP, "gen"), "--rows", "2000", "--queries", "10",
       "--dim", "16")
    for job in ("job-a", "job-b"):
        root = os.path.join(ds, "_indices", "_staging", job)
        os.makedirs(root)
        sf("train", "--vectors", os.path.join(TMP, "gen", "base.fvecs"), "--out", root,
           "--index-type", "IVF_PQ", "--pq-m", "4", "--metric", "L2", "--nlist", "8")
    brokers = start_broker()
    check(brokers.startswith("127.0.0.1:"), "the broker prints a loopback address: " + brokers)

    staged = {}
    for sid, frags in (("w0", "0-4"), ("w1", "5-9")):
        out = json.loads(stage(ds, "job-a", sid, frags, brokers).stdout)
        staged[("job-a", sid)] = out
    out = json.loads(stage(ds, "job-b", "w0", "0-9", brokers,
                           "--target-segment-bytes", "1M").stdout)
    staged[("job-b", "w0")] = out
    for k, v in staged.items():
        check(v.get("event_id", "").startswith("%s/%s@" % k), "stage prints the event id of %s/%s" % k)

    # A re-announcement of the same shard (staged again on purpose: --force)
    # keeps its event id.
    again = json.loads(stage(ds, "job-a", "w0", "0-4", brokers, "--force").stdout)
    check(again["event_id"] == staged[("job-a", "w0")]["event_id"],
          "re-staging the same shard announces the same event_id")

    # The example worker (over the public library) trains its own job,
    # stages its shard from memory and announces it.
    bindir = os.path.dirname(SEGFORGE)
    example = os.path.join(bindir, "example_worker_publish")
    n_expected = 4
    if os.path.exists(example):
        subprocess.run([os.path.join(bindir, "example_train"), ds, "job-c"], check=True,
                       capture_output=True, timeout=60)
        p = subprocess.run([example, ds, "job-c", "w0", "0", "1", "0-1", brokers],
                           capture_output=True, timeout=60)
        check(p.returncode == 0 and b"published job-c/w0@" in p.stdout,
              "examples/worker_publish announces a shard: " + (p.stdout + p.stderr).decode().strip())
        n_expected += 1

    msgs = read_topic(brokers, n_expected)
    check(len(msgs) == n_expected, "python3-kafka reads the %d events (got %d)" % (n_expected, len(msgs)))
    schema = SCHEMAS["ShardStaged"]
    fp = crc64_avro(schema.canonical_form.encode())
    seen = set()
    for m in msgs:
        v = m.value
        check(v[:2] == b"\xc3\x01" and struct.unpack_from("<Q", v, 2)[0] == fp,
              "offset %d: single-object header with ShardStaged's fingerprint" % m.offset)
        d, rest = avro_decode(schema, v[10:])
        check(rest == 0, "offset %d: the datum is decoded exactly" % m.offset)
        key = (d["staging_id"], d["shard_id"])
        check(m.key == d["staging_id"].encode(), "%s/%s: keyed by its staging_id" % key)
        check(m.partition == (murmur2(m.key) & 0x7FFFFFFF) % PARTITIONS,
              "%s/%s: on the partition Java's murmur2 partitioner picks" % key)
        host, _, pid = (d.get("producer") or "").rpartition("/")
        check(host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid(),
              "%s/%s: producer names the publishing process as host/pid (%s)"
              % (key + (d.get("producer"),)))
        if d["index_name"] != "idx":  # the example program's own event
            check(key == ("job-c", "w0") and d["index_name"] == "emb_idx",
                  "the example's event has its own index name")
            continue
        s = staged[key]
        path = s["path"]
        root = os.path.join(ds, "_indices", "_staging", d["staging_id"])
        check(d["event_id"] == s["event_id"], "%s/%s: event_id as printed" % key)
        check(d["dataset_uri"] == os.path.realpath(ds), "%s/%s: dataset_uri is absolute" % key)
        check(os.path.join(root, d["shard_path"]) == path and d["shard_path"] == key[1] + ".sfshard",
              "%s/%s: shard_path relative to the staging root" % key)
        frags = roaring_read(d["fragments"])
        want = list(range(0, 5)) if key == ("job-a", "w0") else \
            list(range(5, 10)) if key == ("job-a", "w1") else list(range(10))
        check(frags == want, "%s/%s: fragments decode as the staged set" % key)
        check(roaring_read(d["expected_fragments"]) == list(range(10)),
              "%s/%s: expected_fragments 0-9" % key)
        check(d["quantizer_checksum"] & (2**64 - 1) == int(s["quantizer_checksum"], 16),
              "%s/%s: quantizer_checksum of the staging root's quantizer" % key)
        check(d["num_rows"] == s["rows"] == 200 * len(want), "%s/%s: num_rows" % key)
        check(d["shard_bytes"] == os.path.getsize(path) == s["bytes"], "%s/%s: shard_bytes" % key)
        check(d["index_type"] == "IVF_PQ" and d["metric"] == "L2" and d["dim"] == 16 and
              d["num_partitions"] == 8, "%s/%s: parameters from the shard file" % key)
        tsb = 1 << 20 if key[0] == "job-b" else None
        check(d["target_segment_bytes"] == tsb, "%s/%s: target_segment_bytes %s" % (key + (tsb,)))
        seen.add(key)
    check(len(seen) == 3, "every announced shard was read back")

    p = subprocess.run(["kcat", "-C", "-b", brokers, "-t", TOPIC, "-e", "-q", "-f", "%k\n"],
                       capture_output=True, timeout=30)
    keys = sorted(p.stdout.decode().split())
    check(keys == sorted(["job-a"] * 3 + ["job-b"] + ["job-c"] * (n_expected - 4)),
          "kcat sees the same keys")

    # Refusals: before staging for bad flags, after it for the broker.
    p = stage(ds, "job-a", "w2", "0", brokers, "-X", "no.such.property=1", expect=2)
    check(b"no.such.property" in p.stderr, "-X with an unknown property is a usage error")
    p = stage(ds, "job-a", "w2", "0", brokers, "--staging-id", "job-b", expect=1)
    check(b"nothing was staged" in p.stderr and b"is not the staging root" in p.stderr,
          "a staging id that does not name the staging root is refused")
    check(not os.path.exists(os.path.join(ds, "_indices", "_staging", "job-a", "w2.sfshard")),
          "...before the shard is written")
    p = stage(ds, "job-a", "w3", "0", "127.0.0.1:1", "--timeout", "1500", expect=1)
    check(b"staged, but not announced" in p.stderr and b"outcome unknown" in p.stderr,
          "an unreachable broker fails after --timeout: " + p.stderr.decode().strip()[-160:])

    # A file: URI without a host part is a URI, not a relative path.
    for uri in ("file:" + ds, "FILE:" + ds):
        p = stage(ds, "job-a", "w4", "0", "127.0.0.1:1", "--timeout", "1500", "--force",
                  "--dataset-uri", uri, expect=1)
        check(b"staged, but not announced" in p.stderr,
              "--dataset-uri %s is taken as a URI: %s" % (uri[:5], p.stderr.decode().strip()[-160:]))

    stop_broker()
    check(broker.returncode == 0, "the broker stops cleanly on SIGTERM")
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
