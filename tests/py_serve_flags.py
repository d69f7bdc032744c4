#!/usr/bin/python3
"""`segforge serve` refuses bad flags before it consumes anything: each bad
value exits non-zero within seconds (no hang on a broker), with a message
naming the flag or property and what to use instead."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_flags")
os.makedirs(root, exist_ok=True)
a_file = os.path.join(root, "a-file")
open(a_file, "w").close()

cases = [  # (args, phrases the message must hold)
    (["--dataset-root", os.path.join(root, "missing")], ["--dataset-root", "missing", "create it"]),
    (["--dataset-root", a_file], ["--dataset-root", "a-file"]),
    (["-X", "segforge.dataset.roots=%s" % root + "/missing"], ["segforge.dataset.roots", "missing"]),
    (["-X", "segforge.dataset.roots=relative/dir"], ["segforge.dataset.roots", "absolute"]),
    (["-X", "segforge.dataset.roots=/a,,/b"], ["segforge.dataset.roots"]),
    (["--max-merges", "0"], ["--max-merges"]),
    (["--workers", "many"], ["--workers"]),
    (["--staging-timeout", "soon"], ["--staging-timeout", "10m"]),
    (["--drain-timeout", "-1s"], ["--drain-timeout"]),
    (["--retry-max-backoff", "forever"], ["--retry-max-backoff", "90s"]),
    (["--max-pending-bytes", "0"], ["--max-pending-bytes"]),
    (["--partitions", "0"], ["--partitions"]),
    (["--log-level", "loud"], ["--log-level", "debug"]),
    (["--segments-per-tier", "1"], ["--segments-per-tier", "2 to 1024"]),
    (["--floor-segment-bytes", "2G", "--max-segment-bytes", "1G"],
     ["--floor-segment-bytes", "2147483648", "1073741824"]),
    (["-X", "no-equals-sign"], ["no-equals-sign"]),
    (["-X", "enable.auto.commit=true"], ["enable.auto.commit"]),
    (["--config", os.path.join(root, "no-such.conf")], ["no-such.conf"]),
    (["--no-such-flag"], ["no-such-flag"]),
    (["stray"], ["stray"]),
]
for args, phrases in cases:
    try:
        p = subprocess.run([h.SEGFORGE, "serve"] + args, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        check(False, "%s: exits instead of serving" % " ".join(args))
        continue
    err = p.stderr.decode(errors="replace")
    check(p.returncode != 0, "%s: exits non-zero (got %d)" % (" ".join(args), p.returncode))
    missing = [x for x in phrases if x not in err]
    check(not missing, "%s: the message names %s: %r" % (" ".join(args), phrases, err.strip()[-300:]))
    if args[0].startswith("--"):  # a bad flag fails before an embedded broker starts
        check("embedded_broker" not in err, "%s: refused before starting a broker" % args[0])
h.finish()
