#!/usr/bin/python3
"""Every flag from the environment (SEGFORGE_<FLAG>) and any librdkafka
property (SEGFORGE_X_<PROPERTY>), with the precedence flag > environment >
configuration file, read back from what `segforge serve` says it runs with
(its event=serving line), on the embedded broker; and a bad value names its
variable."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_env")
os.makedirs(root, exist_ok=True)
conf = os.path.join(root, "client.conf")
with open(conf, "w") as f:
    f.write("group.id=g-file\nsegforge.topic.staged=t-file\n")
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("SEGFORGE_")}


def serving(args, env):
    """The key=value pairs of serve's event=serving line."""
    e = dict(CLEAN)
    e.update(env)
    log = os.path.join(root, "serve.log")
    with open(log, "wb") as lf:
        p = subprocess.Popen([h.SEGFORGE, "serve"] + args, stdout=subprocess.DEVNULL,
                             stderr=lf, env=e)
        end = time.time() + 30
        line = None
        while time.time() < end and line is None and p.poll() is None:
            time.sleep(0.1)
            line = next((l for l in open(log).read().splitlines() if "event=serving" in l),
                        None)
        p.terminate()
        p.wait(30)
    if not line:
        return {}
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


s = serving([], {"SEGFORGE_MAX_MERGES": "3", "SEGFORGE_STAGING_TIMEOUT": "90s",
                 "SEGFORGE_WORKERS": "5"})
check(s.get("max_merges") == "3" and s.get("staging_timeout_ms") == "90000" and
      s.get("workers") == "5", "flags from SEGFORGE_<FLAG>: %s" % s)
s = serving(["--max-merges", "4"], {"SEGFORGE_MAX_MERGES": "3"})
check(s.get("max_merges") == "4", "the flag wins over the environment: %s" % s.get("max_merges"))
# A repeatable flag on the command line replaces its variable, not adds to
# it: an image's SEGFORGE_DATASET_ROOT is narrowed by --dataset-root (were
# the variable still read, its root that does not exist would stop serve).
s = serving(["--dataset-root", root], {"SEGFORGE_DATASET_ROOT": "/nonexistent/roots"})
check(s.get("event") == "serving",
      "--dataset-root replaces SEGFORGE_DATASET_ROOT, not adds to it: %s" % s)
s = serving(["--dataset-root=" + root], {"SEGFORGE_DATASET_ROOT": "/nonexistent/roots"})
check(s.get("event") == "serving", "the same as --dataset-root=DIR: %s" % s)
# getopt_long takes abbreviations; they count as the flag given, too.
s = serving(["--dataset-r", root], {"SEGFORGE_DATASET_ROOT": "/nonexistent/roots"})
check(s.get("event") == "serving",
      "--dataset-r (an abbreviation) replaces SEGFORGE_DATASET_ROOT too: %s" % s)
s = serving(["--dataset-ro=" + root], {"SEGFORGE_DATASET_ROOT": "/nonexistent/roots"})
check(s.get("event") == "serving", "the same as --dataset-ro=DIR: %s" % s)
s = serving(["--work", "4"], {"SEGFORGE_WORKERS": "3"})
check(s.get("workers") == "4", "--work wins over the environment: %s" % s.get("workers"))
# A variable that no flag of serve reads (a typo) is said, not refused.
s = serving([], {"SEGFORGE_MAX_MERGE": "3", "SEGFORGE_MAX_MERGES": "4",
                 "SEGFORGE_X_LINGER_MS": "5"})
said = [l for l in open(os.path.join(root, "serve.log")).read().splitlines()
        if "event=unknown_variable" in l]
check(s.get("max_merges") == "4" and len(said) == 1 and "level=warn" in said[0] and
      "name=SEGFORGE_MAX_MERGE " in said[0],
      "an unknown SEGFORGE_ variable is warned about, once, by name: %s" % said)
s = serving(["--config", conf], {})
check(s.get("group") == "g-file" and s.get("topic") == "t-file",
      "the configuration file alone: %s %s" % (s.get("group"), s.get("topic")))
s = serving(["--config", conf], {"SEGFORGE_GROUP": "g-env",
                                 "SEGFORGE_X_SEGFORGE_TOPIC_STAGED": "t-env"})
check(s.get("group") == "g-env" and s.get("topic") == "t-env",
      "the environment (a flag, and a property by SEGFORGE_X_) wins over the file, "
      "wherever --config stands: %s %s" % (s.get("group"), s.get("topic")))
s = serving(["--conf", conf], {"SEGFORGE_GROUP": "g-env"})
check(s.get("group") == "g-env" and s.get("topic") == "t-file",
      "an abbreviated --conf is still the file, under the environment: %s %s"
      % (s.get("group"), s.get("topic")))
s = serving(["--group", "g-flag", "--config", conf, "-X", "segforge.topic.staged=t-flag"],
            {"SEGFORGE_GROUP": "g-env", "SEGFORGE_X_SEGFORGE_TOPIC_STAGED": "t-env"})
check(s.get("group") == "g-flag" and s.get("topic") == "t-flag",
      "the command line wins over both, even before --config: %s %s"
      % (s.get("group"), s.get("topic")))
s = serving([], {"SEGFORGE_CONFIG": conf, "SEGFORGE_COMPACT": "off"})
check(s.get("group") == "g-file" and s.get("compact") == "off",
      "SEGFORGE_CONFIG names the file; a choice flag: %s" % s)


def refused(args, env):
    e = dict(CLEAN)
    e.update(env)
    p = subprocess.run([h.SEGFORGE] + args, capture_output=True, env=e, timeout=30)
    return p.returncode, p.stderr.decode()


rc, err = refused(["serve"], {"SEGFORGE_MAX_MERGES": "0"})
check(rc == 2 and err.startswith("segforge serve: SEGFORGE_MAX_MERGES (from the environment): "
                                  "--max-merges: '0' is not a whole number from 1 to 256"),
      "a bad value names its variable and the flag's form: %r" % err)
rc, err = refused(["serve"], {"SEGFORGE_X_NO_SUCH_PROPERTY": "1"})
check(rc == 2 and "SEGFORGE_X_NO_SUCH_PROPERTY (from the environment, as -X no.such.property)"
      in err and "No such configuration property" in err,
      "an unknown librdkafka property names its variable: %r" % err)
rc, err = refused(["status", "--metrics-addr", "127.0.0.1:1"], {"SEGFORGE_JSON": "maybe"})
check(rc == 2 and "SEGFORGE_JSON='maybe'" in err, "a switch takes 1/true/yes or 0/false/no")
rc, err = refused(["plan", "--staging", "/nonexistent"], {"SEGFORGE_TARGET_SEGMENT_BYTES": "1X"})
check(rc == 2 and "SEGFORGE_TARGET_SEGMENT_BYTES" in err,
      "the same for every command (plan): %r" % err)
rc, err = refused(["compact", "--dataset", root, "--index", "i"],
                  {"SEGFORGE_SEGMENTS_PER_TIER": "0"})
check(rc == 2 and "SEGFORGE_SEGMENTS_PER_TIER (from the environment)" in err,
      "compact reads the policy from the environment too: %r" % err)
rc, err = refused(["status"], {"SEGFORGE_METRICS_ADDR": "127.0.0.1:1"})
check(rc == 1 and "cannot reach segforge serve at 127.0.0.1:1" in err,
      "a flag without its own variable in another command (status --metrics-addr): %r" % err)

# --log-format json (here from the environment): every line one JSON object.
import json  # noqa: E402
e = dict(CLEAN, SEGFORGE_LOG_FORMAT="json")
log = os.path.join(root, "json.log")
with open(log, "wb") as lf:
    p = subprocess.Popen([h.SEGFORGE, "serve", "--dataset-root", root], stdout=subprocess.DEVNULL,
                         stderr=lf, env=e)
    end = time.time() + 30
    while time.time() < end and "serving" not in open(log).read():
        time.sleep(0.1)
    p.terminate()
    p.wait(30)
lines = open(log).read().splitlines()
objs = []
for l in lines:
    try:
        objs.append(json.loads(l))
    except ValueError:
        objs.append(None)
check(lines and all(o and {"ts", "level", "event"} <= set(o) for o in objs),
      "--log-format json: each of %d lines a JSON object with ts, level, event" % len(lines))
srv = [o for o in objs if o and o["event"] == "serving"]
check(srv and srv[0]["workers"] == 2 and srv[0]["group"] == "segforge-finalizer" and
      srv[0]["level"] == "info", "the members keep their values, numbers as numbers: %s" % srv)
check(any(o and o["event"] == "stopped" for o in objs), "through the last line (stopped)")

# Ids and names stay strings though they look like numbers: a pipeline that
# maps a member's type from its first value must not see group 7 here and
# "g-a" there.
log = os.path.join(root, "json2.log")
with open(log, "wb") as lf:
    p = subprocess.Popen([h.SEGFORGE, "serve", "--dataset-root", root, "--group", "007",
                          "-X", "segforge.topic.staged=2024.10"],
                         stdout=subprocess.DEVNULL, stderr=lf, env=e)
    end = time.time() + 30
    while time.time() < end and "serving" not in open(log).read():
        time.sleep(0.1)
    p.terminate()
    p.wait(30)
srv = [json.loads(l) for l in open(log).read().splitlines() if '"serving"' in l]
check(srv and srv[0]["group"] == "007" and srv[0]["topic"] == "2024.10" and
      srv[0]["workers"] == 2, "a group and a topic that look like numbers stay strings: %s"
      % srv)
h.finish()
