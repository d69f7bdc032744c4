#!/usr/bin/python3
"""The default drain fits Kubernetes' 30 s termination grace: SIGTERM while
a job's build would run for a minute (SF_FAULT=build.slow_partition, 1024
partitions at 50 ms each), with the default --drain-timeout, and serve exits
0 within 30 s, its build canceled and the job given back (offsets not
committed); a restart commits it exactly once. Prints the measured time."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_drain")
d = h.Dataset(os.path.join(root, "a"), rows=8000, dim=8, rpf=500, nlist=1024)
d.train("long")
evs = [d.stage("long", "s%d" % i, "%d-%d" % (8 * i, 8 * i + 7), "0-15")[1] for i in range(2)]

broker, boot = h.start_broker(partitions=1)
ARGS = ["--brokers", boot, "--group", "g-drain", "-X", "fetch.wait.max.ms=5",
        "--dataset-root", root, "--max-merges", "1"]
serve = h.Serve(ARGS, os.path.join(root, "serve1.log"), env={"SF_FAULT": "build.slow_partition"})
prod = h.producer(boot)
for raw in evs:
    h.send(prod, "long", raw)
check(serve.wait_log("event=job_complete", 60), "the job is complete and its build starts")
time.sleep(2)  # well into a build of about a minute
t0 = time.time()
rc = serve.stop(timeout=60)
took = time.time() - t0
print("SIGTERM to exit with a build in flight: %.2f s (default --drain-timeout)" % took)
check(rc == 0, "serve exits 0 after the drain")
check(took < 30, "within Kubernetes' 30 s termination grace: %.2f s" % took)
check(took >= 19, "having waited the drain for the build first: %.2f s" % took)
check(not any("event=job_committed" in l for l in serve.lines()), "the job was not committed")
committed, ends = h.group_offsets(boot, group="g-drain")
check(all(committed[tp] == 0 for tp in committed),
      "its offsets are not committed: the job is given back: %s" % committed)

again = h.Serve(ARGS, os.path.join(root, "serve2.log"))
got = h.read_topic(boot, h.COMMITTED, "SegmentsCommitted", timeout=120,
                   until=lambda l: len(l) >= 1)
check(len(got) == 1 and got[0][3]["staging_id"] == "long", "a restart commits it once")
check(again.stop() == 0, "the restarted serve exits 0")
broker.kill()
h.finish()
