#!/usr/bin/python3
"""`segforge wait` (sf_worker_wait, over sf_jobstatus_wait): started before a
job's events are sent, it returns 0 with the catalog version that
SegmentsCommitted announces; 3 with FRAGMENT_OVERLAP for a job that serve
fails (its failed marker); 3 with MISSING_FILE for a job whose event was
dead-lettered alone (read back from the dead-letter topic, with --brokers),
and 4 (timeout) for the same job without --brokers; 1 for a job committed
into another index than --index; 2 without --dataset."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_wait")
d = h.Dataset(os.path.join(root, "a"), rows=4000, dim=16, rpf=500, nlist=16)
for job in ("j1", "j2", "j3"):
    d.train(job)
j1 = [d.stage("j1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-7") for i in range(2)]
j2 = [d.stage("j2", "s0", "0-3", "0-7"), d.stage("j2", "s1", "3-7", "0-7")]  # overlap on 3
j3ev, _ = d.stage("j3", "s0", "0-3", "0-7")
j3ev = dict(j3ev, shard_path="nowhere.sfshard", event_id="j3/missing")
j3raw = h.encode_staged(j3ev)

broker, boot = h.start_broker(partitions=2)
serve = h.Serve(["--brokers", boot, "--group", "g-wait", "-X", "fetch.wait.max.ms=5",
                 "--dataset-root", root], os.path.join(root, "serve.log"))


def wait(*args, timeout=120):
    return subprocess.Popen([h.SEGFORGE, "wait", "--dataset", d.ds] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def done(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out.decode(), err.decode()


w1 = wait("--staging-id", "j1", "--index", "idx", "--timeout", "90000")
w2 = wait("--staging-id", "j2", "--timeout", "90000")
w3 = wait("--staging-id", "j3", "--timeout", "90000", "--brokers", boot)
time.sleep(1)
check(all(p.poll() is None for p in (w1, w2, w3)), "each wait blocks while nothing is sent")

prod = h.producer(boot)
for sid, evs in (("j1", j1), ("j2", j2)):
    for ev, raw in evs:
        h.send(prod, sid, raw)
h.send(prod, "j3", j3raw)

rc, out, err = done(w1)
got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", timeout=30,
                   until=lambda l: any(m[3]["staging_id"] == "j1" for m in l))
ver = [m[3]["catalog_version"] for m in got if m[3]["staging_id"] == "j1"]
check(rc == 0 and ver and out.strip() == "committed: j1 into index idx, catalog version %d"
      % ver[0], "wait returns 0 once committed, with the announced version: %d %r %r"
      % (rc, out, err))

rc, out, err = done(w2)
check(rc == 3 and "failed: FRAGMENT_OVERLAP" in err and "_failed/j2" in err,
      "a job serve failed: exit 3, the reason and the marker: %d %r" % (rc, err))

rc, out, err = done(w3)
check(rc == 3 and "dead letter: MISSING_FILE" in err and "shard s0" in err and
      h.REJECTED in err, "an event dead-lettered alone: exit 3 with its reason (--brokers): "
      "%d %r" % (rc, err))

p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j3",
                    "--timeout", "1500"], capture_output=True, timeout=60)
check(p.returncode == 4 and b"timeout" in p.stderr and b"1500 ms" in p.stderr,
      "without --brokers the same job times out: exit 4: %r" % p.stderr)
# --timeout takes a duration with a unit; a bare number stays milliseconds.
for val, ms in (("2s", 2000), ("0.5s", 500), ("700", 700)):
    t0 = time.time()
    p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j3",
                        "--timeout", val], capture_output=True, timeout=60)
    took = time.time() - t0
    check(p.returncode == 4 and ("%d ms" % ms).encode() in p.stderr and
          ms / 1e3 <= took < ms / 1e3 + 5,
          "--timeout %s waits %d ms, then exit 4 (%.2f s): %r" % (val, ms, took, p.stderr))
for val in ("-1s", "5x", "1e3", "0", "3000000h"):
    p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j3",
                        "--timeout", val], capture_output=True, timeout=60)
    check(p.returncode == 2 and b"--timeout: '" in p.stderr and b"500ms, 90s or 10m" in p.stderr
          and b"a bare number is milliseconds" in p.stderr,
          "--timeout %s is refused naming the flag and the forms: %r" % (val, p.stderr))
p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j1",
                    "--index", "other", "--timeout", "1500"], capture_output=True, timeout=60)
check(p.returncode == 1 and b"committed into index 'idx', not 'other'" in p.stderr,
      "committed into another index: exit 1 naming both: %r" % p.stderr)
p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j1", "--json"],
                   capture_output=True, timeout=60)
check(p.returncode == 0 and b'"state":"committed"' in p.stdout, "--json: %r" % p.stdout)
# --json is JSON whatever the marker (or a dead letter) says: a marker
# written by hand, its reason and message holding quotes, a backslash and
# a newline.
import json  # noqa: E402
os.makedirs(os.path.join(d.ds, "_indices", "_failed"), exist_ok=True)
with open(os.path.join(d.ds, "_indices", "_failed", "j9"), "w") as f:
    json.dump({"staging_id": "j9", "reason": 'BAD"REASON\\', "message": 'a "quoted"\nline'},
              f)
p = subprocess.run([h.SEGFORGE, "wait", "--dataset", d.ds, "--staging-id", "j9", "--json"],
                   capture_output=True, timeout=60)
try:
    doc = json.loads(p.stdout)
except ValueError:
    doc = None
check(p.returncode == 3 and doc and doc.get("state") == "failed" and
      doc.get("reason") == 'BAD"REASON\\' and
      doc.get("message", "").startswith('a "quoted"\nline (failed marker '),
      "--json of a failed job: one JSON object, reason and message escaped: %r" % p.stdout)
p = subprocess.run([h.SEGFORGE, "wait", "--staging-id", "j1"], capture_output=True,
                   timeout=60)
check(p.returncode == 2 and b"--dataset D and --staging-id S are required" in p.stderr,
      "without --dataset: a usage error")
p = subprocess.run([h.SEGFORGE, "wait", "--dataset", os.path.join(root, "none"),
                    "--staging-id", "j1"], capture_output=True, timeout=60)
check(p.returncode == 1 and b"NOTFOUND" in p.stderr.upper(),
      "a dataset that does not exist: exit 1: %r" % p.stderr)

check(serve.stop() == 0, "serve exits 0 on SIGTERM")
broker.kill()
h.finish()
