#!/usr/bin/python3
"""`--max-pending-bytes` bounds what `segforge serve` holds in memory, as
the operating system sees it (docs/serve.md, "What --max-pending-bytes
counts"): 100,000 ShardStaged events of distinct jobs that never complete
(each expects two fragments, one arrives) are produced with python3-kafka
against a 16 MiB bound. serve must pause its consumer, and its resident
memory (/proc/<pid>/status VmRSS) must then exceed what it was before the
events by at most twice the bound.

The baseline is serve idle and subscribed, before any event: the program,
its threads and librdkafka's connections. The broker runs in a process of
its own (`segforge broker`), so that the events it keeps are not counted. librdkafka's prefetch queue
(queued.max.messages.kbytes) is not in it: serve sizes it from the bound,
so it counts against the bound.

Each event needs a real shard file in its own staging root. 100,000
directories cost about 400 MB of blocks and half a minute to delete on a
disk file system, so the dataset lives in /dev/shm when there is one; the
shard is hard-linked into each root (a link count is at most 65,000: two
copies). Under AddressSanitizer the resident memory is its quarantine and
shadow more than serve's: the count is still checked, the growth only
printed.
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

check = h.check
JOBS = 100000
ldd = subprocess.run(["ldd", h.SEGFORGE], capture_output=True, text=True).stdout
sanitized = "libasan" in ldd
BOUND = 16 << 20
base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else h.TMP
root = os.path.join(base, "segforge_py_serve_memory_%d" % os.getpid())
logdir = os.path.join(h.TMP, "py_serve_memory")
shutil.rmtree(logdir, ignore_errors=True)
os.makedirs(logdir)
try:
    d = h.Dataset(root, rows=1000, dim=8, rpf=500, nlist=4)  # two fragments
    first = "m-%06d" % 0
    d.train(first)
    ev, raw = d.stage(first, "w0", "0", "0-1")  # the job expects 0-1; 1 never comes
    assert raw.count(first.encode()) == 2  # event_id and staging_id: patched below
    t0 = time.time()
    shard = os.path.join(d.staging(first), "w0.sfshard")
    spare = os.path.join(d.ds, "spare.sfshard")
    shutil.copy(shard, spare)
    for i in range(1, JOBS):
        st = d.staging("m-%06d" % i)
        os.mkdir(st)
        os.link(shard if i < 60000 else spare, os.path.join(st, "w0.sfshard"))
    print("staging roots: %.1f s" % (time.time() - t0), flush=True)

    # A broker of its own: serve's embedded one would hold the events in
    # serve's memory.
    broker, boot = h.start_broker(partitions=8)
    serve = h.Serve(["--brokers", boot, "--group", "g-mem", "-X", "fetch.wait.max.ms=5",
                     "--max-pending-bytes", str(BOUND), "--staging-timeout", "30m"],
                    os.path.join(logdir, "serve.log"))
    serve.bootstrap = boot
    check(serve.wait_log("event=partitions_assigned", timeout=60), "serve is assigned")
    time.sleep(2.0)

    def rss_kb():
        with open("/proc/%d/status" % serve.p.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    idle = rss_kb()
    print("idle resident memory: %d kB" % idle, flush=True)
    t0 = time.time()
    prod = KafkaProducer(bootstrap_servers=serve.bootstrap, acks=1, linger_ms=20,
                         batch_size=256 << 10, api_version_auto_timeout_ms=10000)
    for i in range(JOBS):
        sid = ("m-%06d" % i).encode()
        prod.send(h.STAGED, key=sid, value=raw.replace(first.encode(), sid))
    prod.flush(120)
    prod.close()
    print("produced %d events: %.1f s" % (JOBS, time.time() - t0), flush=True)

    paused = serve.wait_log("event=consumer_paused", timeout=90)
    check(paused, "serve pauses its consumer")
    time.sleep(3.0)  # what was fetched before the pause is taken in
    held = rss_kb()
    line = next((l for l in serve.lines() if "event=consumer_paused" in l), "")
    m = re.search(r"pending=(\d+) pending_bytes=(\d+)", line)
    pending, counted = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    grown = (held - idle) * 1024
    print("paused with %d events pending, %d bytes counted; resident memory %d kB, "
          "%.1f MiB more than idle (%.0f bytes per pending job)"
          % (pending, counted, held, grown / 2**20, grown / max(pending, 1)), flush=True)
    check(counted >= BOUND, "it paused on the byte bound (%d counted)" % counted)
    check(pending >= 5000, "after taking thousands of jobs (%d)" % pending)
    if sanitized:  # its quarantine and shadow memory are no measure of serve's
        print("skipped under AddressSanitizer: resident memory within twice the bound")
    else:
        check(grown <= 2 * BOUND,
              "resident memory grew by %.1f MiB, within twice the %d MiB bound"
              % (grown / 2**20, BOUND >> 20))
    check(serve.p.poll() is None, "serve is still running")
    check(serve.stop(timeout=60) == 0, "SIGTERM exits 0")
finally:
    shutil.rmtree(root, ignore_errors=True)
h.finish()
