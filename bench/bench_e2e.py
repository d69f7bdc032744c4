#!/usr/bin/python3
"""End-to-end benchmark of `segforge serve` on its embedded broker (run by
bench/bench_e2e.sh; never part of the tests).

1. Latency: JOBS small jobs of SHARDS shards, one after another. For each,
   the time from the broker's acknowledgement of its last ShardStaged to the
   arrival of its SegmentsCommitted at an independent consumer
   (python3-kafka), minus the job's finalize time (plan + build + commit, from
   the processor's structured log). What is left is the stream processing:
   fetch, decode, job table, file checks, hand-offs, the announcement and its
   delivery report, and the reader's fetch. Target: <= 20 ms median.
2. Intake: EVENTS ShardStaged of tiny shards, produced before the processor
   starts (so on `segforge broker`, the same embedded broker in its own process), read as fast as it can; jobs are left one fragment short so that
   no finalize work competes with the intake. The rate is the events over
   the time from the assignment of the partitions (the processor's log) to
   the moment its own counter (segforge_events_received_total on
   --metrics-addr, sampled every few milliseconds) reaches them all. Measured twice: new shards (decode,
   job table, file check of each shard: open, pread, CRCs of header, footer,
   directory and bitmap) and half new, half redelivered (a redelivery costs a
   decode and a job-table lookup only). Target: >= 50k events/s.
Figures are medians of RUNS runs.
"""
import io
import os
import re
import statistics
import struct
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import serve_helpers as h  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
import avro.io  # noqa: E402

JOBS = int(os.environ.get("JOBS", "60"))
SHARDS = int(os.environ.get("SHARDS", "2"))
EVENTS = int(os.environ.get("EVENTS", "100000"))
RUNS = int(os.environ.get("RUNS", "3"))
root = os.path.join(h.TMP, "bench_e2e")


STAGED_SCHEMA = h.SCHEMAS["ShardStaged"]
HEADER = b"\xc3\x01" + struct.pack("<Q", h.fingerprint(STAGED_SCHEMA))


def encode(ev):
    bio = io.BytesIO()
    avro.io.DatumWriter(STAGED_SCHEMA).write(ev, avro.io.BinaryEncoder(bio))
    return HEADER + bio.getvalue()


def datum(ins, ds, job, shard, frag, expected):
    cks = int(ins["quantizer_checksum"], 16)
    return {"event_id": "%s/%s" % (job, shard), "dataset_uri": ds, "index_name": "i-" + job,
            "column": "emb", "staging_id": job, "shard_id": shard,
            "shard_path": shard + ".sfshard", "shard_bytes": ins["bytes"],
            "num_rows": ins["num_rows"], "fragments": h.roaring_write([frag]),
            "expected_fragments": h.roaring_write(expected), "index_type": ins["index_type"],
            "metric": ins["metric"], "dim": ins["dim"], "num_partitions": ins["nlist"],
            "quantizer_checksum": cks - (1 << 64) if cks >= 1 << 63 else cks,
            "target_segment_bytes": None, "staged_at_ms": int(time.time() * 1000)}


def start_serve(tag, extra=()):
    s = h.Serve(["--partitions", "4", "--metrics-addr", "127.0.0.1:0"] + list(extra),
                os.path.join(root, tag + ".log"), embedded=True)
    if not s.wait_log("event=metrics_serving", 30):
        raise SystemExit("serve did not start")
    port = int(re.search(r"port=(\d+)", [l for l in s.lines() if "metrics_serving" in l][-1]).group(1))
    return s, port


def received(port):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    m = re.search(r"^segforge_events_received_total (\d+)", body, re.M)
    return int(m.group(1)) if m else 0


# ---- 1. latency -----------------------------------------------------------------
def latency_run(run):
    d = h.Dataset(os.path.join(root, "lat%d" % run), rows=4000, dim=16, rpf=100, nlist=16)
    d.train("q")
    jobs = []
    for j in range(JOBS):
        job = "lat-%d" % j
        d.train(job, copy_from="q")
        jobs.append((job, [d.stage(job, "w%d" % i, str(i), "0-%d" % (SHARDS - 1), index="i-" + job)[1]
                           for i in range(SHARDS)]))
    s, _ = start_serve("lat%d" % run)
    if not s.wait_log("event=partitions_assigned", 30):
        raise SystemExit("serve got no partitions")
    arrived = {}
    stop = threading.Event()

    def reader():
        c = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, fetch_max_wait_ms=1,
                          api_version_auto_timeout_ms=10000)
        tps = [TopicPartition(h.COMMITTED, p) for p in range(4)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        while not stop.is_set():
            for msgs in c.poll(timeout_ms=1).values():
                now = time.time()
                for m in msgs:
                    arrived.setdefault(h.decode(m.value, "SegmentsCommitted")["staging_id"], now)
        c.close()

    th = threading.Thread(target=reader)
    th.start()
    prod = h.producer(s.bootstrap)
    lat = {}
    for job, raws in jobs:
        for raw in raws:
            h.send(prod, job, raw)
        t_last = time.time()
        end = t_last + 30
        while job not in arrived and time.time() < end:
            time.sleep(0.0002)
        if job in arrived:
            lat[job] = (arrived[job] - t_last) * 1e3
    stop.set()
    th.join()
    s.stop()
    fin = {}
    for l in s.lines():
        m = re.search(r"event=job_committed staging_id=(\S+) .*finalize_ms=([\d.]+) publish_ms=([\d.]+)", l)
        if m:
            fin[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    rows = [(lat[j], fin[j][0], fin[j][1]) for j in lat if j in fin][1:]  # the first warms up
    return rows


# ---- 2. intake -------------------------------------------------------------------
def intake_setup():
    d = h.Dataset(os.path.join(root, "intake"), rows=2600, dim=8, rpf=100, nlist=4)
    per_job = 25  # shards of one fragment each; the job expects one more
    d.train("proto")
    infos = []
    for i in range(per_job):
        ev, _ = d.stage("proto", "s%d" % i, str(i), "0-%d" % per_job)
        infos.append(h.json.loads(h.run([h.SEGFORGE, "inspect", "--json",
                                         os.path.join(d.staging("proto"), "s%d.sfshard" % i)]).stdout))
    njobs = EVENTS // per_job
    events = []
    for j in range(njobs):
        job = "in-%d" % j
        root_j = d.staging(job)
        os.makedirs(root_j, exist_ok=True)
        for i in range(per_job):  # hard links: many jobs, few bytes
            dst = os.path.join(root_j, "s%d.sfshard" % i)
            if not os.path.exists(dst):
                os.link(os.path.join(d.staging("proto"), "s%d.sfshard" % i), dst)
            events.append((job, encode(datum(infos[i], d.ds, job, "s%d" % i, i,
                                             list(range(per_job + 1))))))
    return events


def intake_run(run, events, copies):
    # Everything is produced before the processor starts, so the producer's
    # speed does not count: the broker is `segforge broker` (the same
    # embedded broker, in its own process), with 8 partitions because it
    # keeps only the newest ~5 MiB of each.
    broker, B = h.start_broker(partitions=8)
    prod = KafkaProducer(bootstrap_servers=B, acks=1, linger_ms=20, batch_size=1 << 20,
                         buffer_memory=256 << 20, api_version_auto_timeout_ms=10000)
    for _ in range(copies):
        for job, raw in events:
            prod.send(h.STAGED, key=job.encode(), value=raw)
    prod.flush(120)
    prod.close()
    s = h.Serve(["--brokers", B, "-X", "fetch.wait.max.ms=5", "--metrics-addr", "127.0.0.1:0",
                 "--staging-timeout", "1h"], os.path.join(root, "intake%d-%d.log" % (copies, run)))
    if not s.wait_log("event=metrics_serving", 30):
        raise SystemExit("serve did not start")
    port = int(re.search(r"port=(\d+)", [l for l in s.lines() if "metrics_serving" in l][-1]).group(1))
    total = len(events) * copies
    samples = []
    end = time.time() + 300
    while time.time() < end:
        n = received(port)
        samples.append((time.time(), n))
        if n >= total:
            break
        time.sleep(0.002)
    s.stop()
    broker.kill()
    broker.wait()
    # From the assignment of the partitions (the processor's log, ms
    # resolution) to the sample that saw the last event: the metrics thread
    # may be starved while the poll loop is busy, but not once it is done.
    import calendar
    line = next(l for l in s.lines() if "event=partitions_assigned" in l)
    ts = re.search(r"ts=(\S+)Z", line).group(1)
    t0 = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(ts[19:])
    t_done = next((t for t, n in samples if n >= total), samples[-1][0])
    return samples[-1][1] / max(t_done - t0, 1e-3), total, samples[-1][1]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    print("segforge serve, embedded broker, %d cores" % os.cpu_count())
    lat_runs = [latency_run(r) for r in range(RUNS)]
    print("\n1. latency: %d jobs x %d shards, one at a time (ms; medians over %d runs)" %
          (JOBS, SHARDS, RUNS))
    print("   %-34s %8s %8s" % ("", "p50", "p90"))
    for name, k in (("last ShardStaged -> SegmentsCommitted", 0), ("finalize (plan+build+commit)", 1),
                    ("announcement delivery (in overhead)", 2)):
        print("   %-34s %8.2f %8.2f" % (name, statistics.median(pct([r[k] for r in rr], 0.5) for rr in lat_runs),
                                         statistics.median(pct([r[k] for r in rr], 0.9) for rr in lat_runs)))
    over = [[r[0] - r[1] for r in rr] for rr in lat_runs]
    p50 = statistics.median(pct(o, 0.5) for o in over)
    print("   %-34s %8.2f %8.2f   (target <= 20 ms p50: %s)" %
          ("overhead = end-to-end - finalize", p50, statistics.median(pct(o, 0.9) for o in over),
           "met" if p50 <= 20 else "NOT met"))
    events = intake_setup()
    print("\n2. intake: %d ShardStaged of tiny shards (25 per job), read by one poll loop" % len(events))
    # The same number of messages both times (the embedded broker keeps only
    # the newest ~5 MiB of a partition): all new, or half new + half redelivered.
    for label, evs, copies in (("new shards (decode, job table, file check)", events, 1),
                               ("half of them redelivered (no file check)",
                                events[:len(events) // 2], 2)):
        rates = []
        for r in range(RUNS):
            rate, total, got = intake_run(r, evs, copies)
            rates.append(rate if got >= total else 0)
        med = statistics.median(rates)
        print("   %-48s %9.0f events/s  (runs: %s; target >= 50k: %s)" %
              (label, med, ", ".join("%.0f" % x for x in rates), "met" if med >= 50000 else "NOT met"))


main()
