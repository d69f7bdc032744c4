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
the same with a full dataset.

Then the same at intake, where an event must be classified before its job
exists: a dataset whose newest catalog version does not read (torn), and,
where a loop device can be mounted, a dataset whose file system fails every
operation with EIO (ext4's shutdown ioctl, as a dying disk). The events that
cannot be classified are held, their jobs' later events queued behind them,
while other jobs on the same partition go on; once the dataset reads again
they are classified and committed without a restart."""
import atexit
import fcntl
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_held")
for left in ("b", "c"):  # mounts a run that was killed left behind
    subprocess.run(["umount", "-l", os.path.join(root, left, "ds")], capture_output=True)
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
# A short session, so that a restarted processor is given the partition soon.
SERVE_ARGS = ["--brokers", boot, "--group", "g-held", "-X", "fetch.wait.max.ms=5",
              "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
              "--retry-max-backoff", "2s", "--metrics-addr", "127.0.0.1:0"]
serve = h.Serve(SERVE_ARGS,
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


def dead_letters(boot, sids, timeout):
    got = h.read_topic(boot, h.REJECTED, "ShardRejected", timeout=timeout,
                       until=lambda l: False)
    return [(m[3]["staging_id"], m[3]["reason"]) for m in got if m[3]["staging_id"] in sids]


def publish(events):
    """Sends (key, raw) in order; the offset of each, by key, of the first."""
    first = {}
    for key, raw in events:
        md = prod.send(h.STAGED, key=key.encode(), value=raw).get(timeout=30)
        first.setdefault(key, md.offset)
    return first


def staging_ids_in(body):
    return {w.split("=", 1)[1] for w in body.split() if w.startswith("staging_id=")}


# ---- at intake: the newest catalog version of a dataset does not read --------------
# b1 is committed, and gc removed its staging root; a restart reads one of its
# events again (offsets may stop before a committed job), and a new job b3
# arrives. Both need b's catalog to be classified: is b1 committed, may b3 open?
b.train("b3", copy_from="b1")
b3 = [b.stage("b3", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7", index="third")
      for i in range(2)]
shutil.rmtree(b.staging("b1"))
a.train("a3")
a3 = [a.stage("a3", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7", index="third")
      for i in range(2)]
catdir = os.path.join(b.ds, "_indices", "_catalog")
newest = sorted(f for f in os.listdir(catdir) if f.startswith("v") and f.endswith(".avro"))[-1]
newest = os.path.join(catdir, newest)
backup = os.path.join(b.ds, "catalog-version.good")  # the same file system: renamed back
shutil.copy(newest, backup)
with open(newest, "r+b") as f:  # a torn write: half of it
    f.truncate(os.path.getsize(backup) // 2)
check(b.catalog() is None, "the newest catalog version of b does not read")
# A restart: the new process knows nothing of b1 but what b's catalog says.
check(serve.stop() == 0, "SIGTERM exits 0")
serve = h.Serve(SERVE_ARGS,
                os.path.join(root, "held-intake.log"))
serve.metrics_port()
first = publish([("b1", b1[0][1]), ("a3", a3[0][1]), ("b3", b3[0][1]), ("a3", a3[1][1]),
                 ("b3", b3[1][1])])
got = announced(boot, {"a3"}, 60)
check("a3" in got, "a job of another dataset, around the held events on the same partition, "
      "is committed and announced")
check(serve.wait_log("event=job_held staging_id=b3 ", timeout=30, count=2),
      "the event that cannot be classified is held and retried")
check(serve.p.poll() is None, "serve keeps running")
held = [l for l in serve.lines() if "event=job_held staging_id=b1 " in l]
check(held and "what=intake" in held[-1] and b.ds in held[-1] and "catalog" in held[-1]
      and "offset=%d" % first["b1"] in held[-1],
      "the log line names the dataset, the intake, the catalog and the held offset: %s"
      % held[-1:])
dl = dead_letters(boot, {"b1", "b3"}, 3)
check(not dl, "no event of b is dead-lettered: b1 (committed, its staging root gone) is "
      "not taken for a new job whose file is missing (%s)" % dl)
status, body = serve.scrape("/healthz")
check(status == 200 and body.startswith("degraded:") and b.ds in body and "what=intake" in body
      and staging_ids_in(body) == {"b1", "b3"},
      "/healthz is degraded, naming the dataset, the intake and both jobs: %r" % body)
vals = serve.metrics()
check(vals.get("segforge_jobs_held") == 2, "segforge_jobs_held counts both (%s)"
      % vals.get("segforge_jobs_held"))
time.sleep(0.5)
off, end = committed_offset(boot, "g-held")
check(off == first["b1"], "the partition's offset waits at the first held event (%d, want "
      "%d; end %d)" % (off, first["b1"], end))

os.replace(backup, newest)  # repaired
got = announced(boot, {"b3"}, 30)
check("b3" in got, "once the catalog reads, the held new job commits, without a restart")
ann = [m[3] for m in h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", timeout=10,
                                   until=lambda l: sum(m[3]["staging_id"] == "b1"
                                                       for m in l) >= 2)
       if m[3]["staging_id"] == "b1"]
check(len(ann) == 2 and ann[0]["event_id"] == ann[1]["event_id"],
      "the held redelivery of b1 is recognised as committed and announced again with "
      "the same event_id: %s" % [x["event_id"] for x in ann])
check(serve.wait_log("event=job_recovered staging_id=b1 ", timeout=10),
      "its recovery is logged")
status, body = serve.scrape("/healthz")
check(status == 200 and body.strip() == "ok", "/healthz is ok again: %r" % body)
check(not dead_letters(boot, {"b1", "b3"}, 3), "and nothing of b was dead-lettered")
time.sleep(0.5)
off, end = committed_offset(boot, "g-held")
check(off == end, "the partition's offset reaches the end (%d of %d)" % (off, end))

# ---- at intake: a dataset whose file system fails with EIO -------------------------
c = h.Dataset(os.path.join(root, "c"), rows=8000, dim=16, rpf=500, nlist=16)
img = os.path.join(root, "c.img")
with open(img, "wb") as f:
    f.truncate(64 << 20)
loop = (subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True).returncode == 0
        and subprocess.run(["mount", "-o", "loop", img, c.ds],
                           capture_output=True).returncode == 0)
print("the failing file system is %s" % ("an ext4 on a loop device, shut down" if loop else
                                          "not available here (no loop mount): skipped"))
if loop:
    atexit.register(lambda: subprocess.run(["umount", "-l", c.ds], capture_output=True))
    c.train("c1")
    c1 = [c.stage("c1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
    a.train("a4")
    a4 = [a.stage("a4", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7", index="fourth")
          for i in range(2)]
    subprocess.run(["sync"], check=True)
    fd = os.open(c.ds, os.O_RDONLY)
    fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 0))  # EXT4_IOC_SHUTDOWN: EIO from now on
    os.close(fd)
    try:
        open(os.path.join(c.staging("c1"), "s0.sfshard"), "rb").read(1)
        check(False, "the shut-down file system fails reads")
    except OSError as e:
        check(e.errno == 5, "the shut-down file system fails reads with EIO (%s)" % e)
    first = publish([("c1", c1[0][1]), ("a4", a4[0][1]), ("c1", c1[1][1]), ("a4", a4[1][1])])
    got = announced(boot, {"a4"}, 60)
    check("a4" in got, "another dataset's job on the same partition is committed and announced")
    check(serve.wait_log("event=job_held staging_id=c1 ", timeout=30, count=2),
          "the event of the failing dataset is held and retried")
    check(serve.p.poll() is None, "serve keeps running (it stopped with exit status %s)"
          % serve.p.poll())
    status, body = serve.scrape("/healthz")
    check(status == 200 and body.startswith("degraded:") and c.ds in body
          and "what=intake" in body and "Input/output error" in body,
          "/healthz is degraded, naming the dataset and the error: %r" % body)
    time.sleep(0.5)
    off, end = committed_offset(boot, "g-held")
    check(off == first["c1"], "the partition's offset waits at the held event (%d, want %d; "
          "end %d)" % (off, first["c1"], end))
    subprocess.run(["umount", "-l", c.ds], check=True)  # the disk replaced: mounted anew
    subprocess.run(["mount", "-o", "loop", img, c.ds], check=True)
    got = announced(boot, {"c1"}, 30)
    check("c1" in got, "once the file system works again the held job commits")
    cat = c.catalog()
    check(cat is not None and [j["staging_id"] for j in cat["jobs"]] == ["c1"],
          "the dataset's catalog holds the job")
    status, body = serve.scrape("/healthz")
    check(status == 200 and body.strip() == "ok", "/healthz is ok again: %r" % body)
    check(not dead_letters(boot, {"c1"}, 3), "nothing of c was dead-lettered")
    time.sleep(0.5)
    off, end = committed_offset(boot, "g-held")
    check(off == end, "the partition's offset reaches the end (%d of %d)" % (off, end))

check(serve.stop() == 0, "SIGTERM exits 0")
broker.kill()
broker.wait()
h.finish()
