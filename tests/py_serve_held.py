#!/usr/bin/python3
"""One dataset that cannot be written must not stop `segforge serve`: its job
is held (offsets kept, retried with backoff, reported in the log, in
/metrics and as "degraded" on /healthz) while the jobs of every other
dataset are committed and announced; once the dataset is writable again the
held job commits without a restart and /healthz is back to ok.

The bad dataset is a real read-only filesystem: a tmpfs mounted on it and
remounted read-only (root cannot write there either, unlike a chmod). Where
mounting is not allowed, the segments directory is replaced by a regular
file instead, which makes every segment write fail too. A second case does
the same with a failed job whose marker cannot be written."""
import atexit
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_held")
subprocess.run(["umount", "-l", os.path.join(root, "b", "ds")], capture_output=True)
a = h.Dataset(os.path.join(root, "a"), rows=8000, dim=16, rpf=500, nlist=16)
b = h.Dataset(os.path.join(root, "b"), rows=8000, dim=16, rpf=500, nlist=16)
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", b.ds],
                         capture_output=True).returncode == 0
if mounted:
    atexit.register(lambda: subprocess.run(["umount", "-l", b.ds], capture_output=True))
print("the bad dataset is %s" % ("a read-only tmpfs" if mounted else
                                  "a dataset whose segments directory is a file"))
segdir = os.path.join(b.ds, "_indices", "segments")


def break_b():
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", b.ds], check=True)
    else:
        os.makedirs(os.path.dirname(segdir), exist_ok=True)
        with open(segdir, "w") as f:
            f.write("in the way\n")


def repair_b():
    if mounted:
        subprocess.run(["mount", "-o", "remount,rw", b.ds], check=True)
    else:
        os.unlink(segdir)


def committed_offset(boot, group):
    c = KafkaConsumer(bootstrap_servers=boot, group_id=group, enable_auto_commit=False,
                      api_version_auto_timeout_ms=10000)
    tp = TopicPartition(h.STAGED, 0)
    off = c.committed(tp) or 0
    end = c.end_offsets([tp])[tp]
    c.close()
    return off, end


def announced(boot, want, timeout):
    got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", timeout=timeout,
                       until=lambda l: want <= {m[3]["staging_id"] for m in l})
    return {m[3]["staging_id"]: m[3] for m in got}


for job in ("a1", "a2"):
    a.train(job)
b.train("b1")
a1 = [a.stage("a1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
a2 = [a.stage("a2", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7", index="other")
      for i in range(2)]
b1 = [b.stage("b1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
break_b()
if mounted:
    try:
        open(os.path.join(b.ds, "probe"), "w")
        check(False, "the read-only dataset refuses writes, even to root")
    except OSError as e:
        check(e.errno == 30, "the read-only dataset refuses writes, even to root (%s)" % e)

# ---- a dataset that cannot be written: its job is held, the others go on ----------
broker, boot = h.start_broker(partitions=1)  # one partition: offsets are predictable
serve = h.Serve(["--brokers", boot, "--group", "g-held", "-X", "fetch.wait.max.ms=5",
                 "--retry-max-backoff", "2s", "--metrics-addr", "127.0.0.1:0"],
                os.path.join(root, "held.log"))
serve.metrics_port()
prod = h.producer(boot)
offsets = {}
for sid, shards in (("a1", a1), ("b1", b1), ("a2", a2)):  # a2 comes after the held job
    for ev, raw in shards:
        md = prod.send(h.STAGED, key=sid.encode(), value=raw).get(timeout=30)
        offsets.setdefault(sid, md.offset)
got = announced(boot, {"a1", "a2"}, 60)
check("a1" in got and "a2" in got,
      "the other dataset's jobs, before and after the held one, are committed and "
      "announced: %s" % sorted(got))
check("b1" not in got, "the job of the read-only dataset is not announced")
check(serve.wait_log("event=job_held staging_id=b1", timeout=30, count=3),
      "the held job is retried, a log line per failed attempt")
check(serve.p.poll() is None, "serve keeps running")
held = [l for l in serve.lines() if "event=job_held staging_id=b1" in l]
check(held and b.ds in held[-1] and "retry_in_ms=" in held[-1]
      and ("Read-only file system" in held[-1] or not mounted),
      "the log line names the dataset, the next wait and the reason: %s" % held[-1:])
waits = [int(l.split("retry_in_ms=")[1].split()[0]) for l in held]
check(waits[:3] == [1000, 2000, 2000], "the waits double up to --retry-max-backoff: %s" % waits)
status, body = serve.scrape("/healthz")
check(status == 200 and body.startswith("degraded:"),
      "/healthz says degraded (a restart would not help): %d %r" % (status, body[:60]))
check(b.ds in body and "staging_id=b1" in body and
      ("Read-only file system" in body or not mounted),
      "/healthz names the dataset, the job and the reason: %r" % body)
vals = serve.metrics()
check(vals.get("segforge_jobs_held") == 1, "segforge_jobs_held counts the held job (%s)"
      % vals.get("segforge_jobs_held"))
check(vals.get("segforge_job_retries_total", 0) >= 2, "segforge_job_retries_total counts "
      "the retries (%s)" % vals.get("segforge_job_retries_total"))
check(vals.get("segforge_jobs_committed_total") == 2, "the two other jobs count as committed")
time.sleep(0.5)
off, end = committed_offset(boot, "g-held")
check(off == offsets["b1"], "the partition's offset waits at the held job's first event "
      "(%d, want %d; end %d)" % (off, offsets["b1"], end))
leftovers = os.listdir(segdir) if os.path.isdir(segdir) else []
check(not [f for f in leftovers if ".tmp" in f], "no temporary file is left behind")

repair_b()
got = announced(boot, {"b1"}, 30)
check("b1" in got, "once the dataset is writable the held job commits, without a restart")
check(serve.wait_log("event=job_recovered staging_id=b1", timeout=10),
      "its recovery is logged")
cat = b.catalog()
check(cat is not None and [j["staging_id"] for j in cat["jobs"]] == ["b1"],
      "the dataset's catalog holds the job")
status, body = serve.scrape("/healthz")
check(status == 200 and body.strip() == "ok", "/healthz is ok again: %d %r" % (status, body))
vals = serve.metrics()
check(vals.get("segforge_jobs_held") == 0, "no job is held any more")
time.sleep(0.5)
off, end = committed_offset(boot, "g-held")
check(off == end, "the partition's offset reaches the end (%d of %d)" % (off, end))

# ---- a full dataset: the same, with the write failing mid-segment ----------------
if mounted:
    b.train("b2", copy_from="b1")
    b2 = [b.stage("b2", "s%d" % i, "%d-%d" % (8 + 4 * i, 11 + 4 * i), "8-15") for i in range(2)]
    filler = os.path.join(b.ds, "filler")
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    for ev, raw in b2:
        h.send(prod, "b2", raw)
    check(serve.wait_log("event=job_held staging_id=b2", timeout=30, count=2),
          "a job of a full dataset is held and retried")
    held = [l for l in serve.lines() if "event=job_held staging_id=b2" in l]
    check(held and "No space left on device" in held[-1], "for want of space: %s" % held[-1:])
    status, body = serve.scrape("/healthz")
    check(status == 200 and body.startswith("degraded:") and "staging_id=b2" in body,
          "/healthz is degraded again: %r" % body[:200])
    check(not [f for f in os.listdir(segdir) if ".tmp" in f],
          "the failed writes leave no temporary file")
    os.unlink(filler)
    got = announced(boot, {"b2"}, 30)
    check("b2" in got, "with space again the held job commits")
    status, body = serve.scrape("/healthz")
    check(status == 200 and body.strip() == "ok", "/healthz is ok again: %r" % body)

check(serve.stop() == 0, "SIGTERM exits 0")
broker.kill()
broker.wait()
h.finish()
