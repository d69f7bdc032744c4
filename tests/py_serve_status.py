#!/usr/bin/python3
"""What an operator reads of a running `segforge serve`: GET /jobs and
`segforge status` (an open job's state, missing fragments, shards seen, age),
/livez and /readyz, and the metrics beyond the counters: jobs by state, the
oldest job's age, the consumer lag per partition from librdkafka's
statistics, segforge_build_info and the process_* metrics. A job waiting
for shards is listed with exactly the fragments it lacks; once its last
shard arrives it is committed and leaves the list."""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_status")
d = h.Dataset(os.path.join(root, "a"), rows=8000, dim=16, rpf=500, nlist=16)
d.train("j1")
shards = [d.stage("j1", "s%d" % i, "%d-%d" % (4 * i, 4 * i + 3), "0-15") for i in range(4)]

broker, boot = h.start_broker(partitions=2)
serve = h.Serve(["--brokers", boot, "--group", "g-status", "-X", "fetch.wait.max.ms=5",
                 "--metrics-addr", "127.0.0.1:0", "--dataset-root", root],
                os.path.join(root, "serve.log"))
port = serve.metrics_port()
addr = "127.0.0.1:%d" % port

status, body = serve.scrape("/livez")
check(status == 200 and body.startswith("alive"), "/livez answers 200: %r" % body)


def wait_for(fn, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


ready = wait_for(lambda: serve.scrape("/readyz")[0] == 200)
status, body = serve.scrape("/readyz")
check(ready and body.startswith("ready: 2 partition(s) assigned"),
      "/readyz is 200 once both partitions are assigned and read: %d %r" % (status, body))

prod = h.producer(boot)
for ev, raw in shards[:2]:
    h.send(prod, "j1", raw)


def jobs():
    s, b = serve.scrape("/jobs")
    return json.loads(b) if s == 200 else None


doc = wait_for(lambda: (lambda x: x if x and x["jobs"] and x["jobs"][0]["shards_seen"] == 2
                        else None)(jobs()))
check(doc is not None, "GET /jobs lists the open job")
if doc:
    j = doc["jobs"][0]
    check(j["staging_id"] == "j1" and j["dataset"] == os.path.realpath(d.ds) and
          j["index_name"] == "idx", "the job's dataset, staging id and index: %s" % j)
    check(j["state"] == "waiting", "its state is waiting (for shards): %s" % j["state"])
    check(j["missing_fragments"] == "8-15" and j["expected_fragments"] == "0-15",
          "the fragments still missing, as a range list: %s" % j["missing_fragments"])
    check(j["events"] == 2 and 0 < j["age_seconds"] < 60 and j["partition"] in (0, 1),
          "events, age and partition: %s" % j)
    check(0 < j["timeout_in_seconds"] <= 600, "the time left before its staging timeout")
    check(doc["group"] == "g-status" and doc["partitions_assigned"] == 2 and
          doc["counts"]["waiting"] == 1, "the group, assignment and counts: %s" % doc)
    part = j["partition"]

p = subprocess.run([h.SEGFORGE, "status", "--metrics-addr", addr], capture_output=True,
                   timeout=30)
out = p.stdout.decode()
row = [l for l in out.splitlines() if " j1 " in l]
check(p.returncode == 0 and row and row[0].split()[0] == "waiting" and
      row[0].split()[-1] == "8-15" and row[0].split()[4] == "2",
      "segforge status prints the job: state, shards seen, missing: %r" % out)
p = subprocess.run([h.SEGFORGE, "status", "--metrics-addr", addr, "--json"],
                   capture_output=True, timeout=30)
check(p.returncode == 0 and json.loads(p.stdout)["jobs"][0]["staging_id"] == "j1",
      "segforge status --json prints the document")
p = subprocess.run([h.SEGFORGE, "status", "--metrics-addr", "127.0.0.1:1"],
                   capture_output=True, timeout=30)
check(p.returncode == 1 and b"cannot reach segforge serve at 127.0.0.1:1" in p.stderr,
      "an address nothing listens on: exit 1 naming it: %r" % p.stderr)
# An address that never completes the handshake (a listener whose accept
# queue is full drops the SYN, as a firewall would): exit 1 within the
# status timeout (10 s), not the kernel's minutes of SYN retries.
import socket  # noqa: E402
sink = socket.socket()
sink.bind(("127.0.0.1", 0))
sink.listen(0)
fill = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(sink.getsockname())
    except BlockingIOError:
        pass
    fill.append(c)
time.sleep(0.3)
t0 = time.time()
try:
    p = subprocess.run([h.SEGFORGE, "status", "--metrics-addr", "127.0.0.1:%d"
                        % sink.getsockname()[1]], capture_output=True, timeout=40)
    check(p.returncode == 1 and b"no connection within 10 s" in p.stderr and
          time.time() - t0 < 20, "an address that drops the connection: exit 1 in %.1f s: %r"
          % (time.time() - t0, p.stderr))
except subprocess.TimeoutExpired:
    check(False, "an address that drops the connection: status still waits after 40 s")
for c in fill:
    c.close()
sink.close()
p = subprocess.run([h.SEGFORGE, "status"], capture_output=True, timeout=30)
check(p.returncode == 2 and b"--metrics-addr HOST:PORT is required" in p.stderr,
      "without --metrics-addr: a usage error")

# The metrics (statistics come every second).
lag_key = 'segforge_consumer_lag{topic="%s",partition="%d"}' % (h.STAGED, part)
m = wait_for(lambda: (lambda x: x if x.get(lag_key) == 2 and
                      x.get('segforge_jobs{state="waiting"}') == 1 else None)(serve.metrics()))
m = m or serve.metrics()
check(m.get(lag_key) == 2,
      "consumer lag of the job's partition: its 2 events, committed only when the job "
      "ends: %s" % m.get(lag_key))
check(m.get('segforge_consumer_read_lag{topic="%s",partition="%d"}' % (h.STAGED, part)) == 0,
      "and read lag 0: every event is read")
check(m.get('segforge_jobs{state="waiting"}') == 1 and
      m.get('segforge_jobs{state="building"}') == 0, "jobs by state")
check(m.get("segforge_oldest_job_age_seconds", 0) > 0, "the oldest open job's age")
check(m.get("segforge_partitions_assigned") == 2, "partitions assigned")
info = [k for k in m if k.startswith("segforge_build_info{")]
check(len(info) == 1 and 'version="' in info[0] and 'commit="' in info[0] and
      m[info[0]] == 1, "segforge_build_info{version,commit} 1: %s" % info)
check(m.get("process_open_fds", 0) > 3 and m.get("process_max_fds", 0) >= m["process_open_fds"],
      "process_open_fds and process_max_fds")
check(m.get("process_resident_memory_bytes", 0) > 1 << 20 and
      m.get("process_virtual_memory_bytes", 0) > m["process_resident_memory_bytes"],
      "process memory")
check(abs(m.get("process_start_time_seconds", 0) - time.time()) < 300,
      "process_start_time_seconds is this process's start: %s" % m.get(
          "process_start_time_seconds"))
check("process_cpu_seconds_total" in m, "process_cpu_seconds_total")
_, text = serve.scrape("/metrics")
for fam in ("process_cpu_seconds_total counter", "segforge_consumer_lag gauge",
            "segforge_jobs gauge", "segforge_build_info gauge"):
    check("# TYPE " + fam in text, "TYPE line: " + fam)

# The last shards: committed, and the job leaves /jobs.
for ev, raw in shards[2:]:
    h.send(prod, "j1", raw)
got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", timeout=60,
                   until=lambda l: len(l) >= 1)
check(len(got) == 1 and got[0][3]["staging_id"] == "j1", "the job is committed")
doc = wait_for(lambda: (lambda x: x if x and not x["jobs"] else None)(jobs()))
check(doc is not None and doc["counts"]["waiting"] == 0, "and no longer listed")
m = wait_for(lambda: (lambda x: x if x.get(lag_key) == 0 else None)(serve.metrics()))
check(m is not None, "its offsets committed: lag 0")

# A dataset whose real path is not UTF-8 (a link to a directory named with
# byte 0xff; the event names the link, its URI is UTF-8): /jobs is still
# JSON, the job listed, the byte replaced by U+FFFD.
if os.path.islink(os.path.join(root, "bx")):  # an earlier run's
    os.unlink(os.path.join(root, "bx"))
shutil.rmtree(os.path.join(root, "b\udcff"), ignore_errors=True)
d2 = h.Dataset(os.path.join(root, "bx"), rows=2000, dim=16, rpf=500, nlist=8)
d2.train("j2")
_, raw2 = d2.stage("j2", "s0", "0-1", "0-3")
os.rename(os.path.join(root, "bx"), os.path.join(root, "b\udcff"))
os.symlink("b\udcff", os.path.join(root, "bx"))
h.send(prod, "j2", raw2)
doc = wait_for(lambda: (lambda x: x if x and x.get("jobs") else None)(jobs()))
j2 = [j for j in (doc or {}).get("jobs", []) if j["staging_id"] == "j2"]
check(j2 and j2[0]["dataset"] == os.path.join(os.path.realpath(root), "b\ufffd", "ds") and
      j2[0]["missing_fragments"] == "2-3",
      "a dataset path that is not UTF-8: /jobs lists the job, the byte replaced: %s"
      % (doc or jobs()))

check(serve.stop() == 0, "serve exits 0 on SIGTERM")
broker.kill()
h.finish()
