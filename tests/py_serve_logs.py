#!/usr/bin/python3
"""Log lines of `segforge serve` carry values from outside (staging ids,
dataset paths, error messages) that hold '"', spaces, '=', backslashes,
control characters and non-ASCII text. In both --log-format logfmt and json,
every line must parse back (a strict logfmt parser here, python3's json) and
give the exact staging id of the events that named it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_serve_logs")
d = h.Dataset(root, rows=2000, dim=8, rpf=500, nlist=4)
d.train("ok")
good, _ = d.stage("ok", "s0", "0-3", "0-3")

# Staging ids that pass the event's checks (printable ASCII, no space, '/'
# or '\\') yet name no staging root: each is named by an event_rejected
# line, in its staging_id member.
VALID = ['a"b=c', '=', '"', 'k="v"', '""==']
# Staging ids the event's checks refuse: the line's message quotes them,
# control characters as \xNN (the decoder's escape), the rest as they are.
INVALID = {'a"b c=d\n': "'a\"b c=d\\x0a'", 'x\\y\tz=\u00e9/\u2603 "q"': "'x\\y\\x09z=\u00e9/\u2603 \"q\"'"}
HOSTILE = VALID + list(INVALID)


def parse_logfmt(line):
    """The pairs of one logfmt line; raises ValueError on anything a strict
    reader would not take (a bare value holding '"' or '=', a bad escape,
    an unterminated quote)."""
    pairs, i, n = [], 0, len(line)
    esc = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    while i < n:
        if line[i] == " ":
            i += 1
            continue
        j = line.find("=", i)
        if j < 0 or any(c in line[i:j] for c in ' "'):
            raise ValueError("no key at %d: %r" % (i, line[i:]))
        key, i = line[i:j], j + 1
        if i < n and line[i] == '"':
            i += 1
            out = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quote: %r" % line)
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    e = line[i + 1:i + 2]
                    if e in esc:
                        out.append(esc[e])
                        i += 2
                    elif e == "u":
                        out.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                    else:
                        raise ValueError("bad escape %r" % line[i:i + 2])
                    continue
                if ord(c) < 0x20:
                    raise ValueError("raw control character in a quoted value")
                out.append(c)
                i += 1
            if i < n and line[i] != " ":
                raise ValueError("text after a quoted value: %r" % line[i:])
            pairs.append((key, "".join(out)))
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            v = line[i:j]
            if '"' in v or "=" in v or "\\" in v or any(ord(c) < 0x20 for c in v):
                raise ValueError("bare value %r needs quotes" % v)
            pairs.append((key, v))
            i = j
    return pairs


# The parser itself: what it must refuse and read.
for bad in ['k=a"b', "k=a=b", 'k="a', 'k="a\\qb"']:
    try:
        parse_logfmt(bad)
        check(False, "the test's logfmt parser refuses %r" % bad)
    except ValueError:
        pass
check(parse_logfmt('a=1 b="x \\"y\\" \\u00e9" c=') == [("a", "1"), ("b", 'x "y" \u00e9'), ("c", "")],
      "the test's logfmt parser reads quoted values and escapes")

spaced = os.path.join(root, 'data "set"=1\\x y')
os.makedirs(spaced, exist_ok=True)


def run_serve(fmt):
    log = os.path.join(root, "serve-%s.log" % fmt)
    serve = h.Serve(["--partitions", "1", "--log-format", fmt, "--dataset-root", root], log,
                    embedded=True)
    prod = h.producer(serve.bootstrap)
    for i, sid in enumerate(HOSTILE):
        ev = dict(good, staging_id=sid, event_id="e%d" % i)
        h.send(prod, "k%d" % i, h.encode_staged(ev))
    # A dataset path with a space, '"', '=' and '\\': no staging
    # root there, the event is refused, and its message names the path.
    ev = dict(good, dataset_uri=spaced, staging_id="sp", event_id="sp")
    h.send(prod, "sp", h.encode_staged(ev))
    needle = "event_rejected" if fmt == "logfmt" else '"event_rejected"'
    ok = serve.wait_log(needle, timeout=60, count=len(HOSTILE))
    rc = serve.stop()
    check(ok and rc == 0, "%s: serve logged %d rejected events and stopped cleanly (rc %s)"
          % (fmt, len(HOSTILE), rc))
    with open(log, "rb") as f:
        raw = f.read()
    check(raw.isascii() or fmt == "logfmt", "%s: the log is ASCII (RFC 8259 escapes)" % fmt)
    return raw.decode("utf-8").split("\n")[:-1]


for fmt in ("logfmt", "json"):
    lines = run_serve(fmt)
    recs, bad = [], []
    for l in lines:
        try:
            recs.append(dict(parse_logfmt(l)) if fmt == "logfmt" else json.loads(l))
        except ValueError as e:
            bad.append((l, str(e)))
    check(lines and not bad, "%s: all %d lines parse back (%s)" % (fmt, len(lines), bad[:2]))
    rej = [r for r in recs if r.get("event") == "event_rejected"]
    rejected = [r.get("staging_id") for r in rej]
    for sid in VALID:
        check(sid in rejected, "%s: the staging id %r comes back exactly (%r)"
              % (fmt, sid, rejected))
    for sid, quoted in INVALID.items():
        msgs = [r.get("message", "") for r in rej]
        check(any("staging_id " + quoted + " " in m for m in msgs),
              "%s: the refused staging id %r comes back in the message as %s (%r)"
              % (fmt, sid, quoted, msgs))
    sp = [r for r in recs if r.get("staging_id") == "sp"]
    check(any(spaced in str(r.get("message", "")) for r in sp),
          "%s: the dataset path with a space, '\"', '=' and '\\\\' comes back whole (%s)" % (fmt, sp))
    if fmt == "json":
        srv = [r for r in recs if r.get("event") == "serving"]
        check(srv and srv[0]["workers"] == 2 and srv[0]["group"] == "segforge-finalizer",
              "json: numbers stay numbers, names strings: %s" % srv)
h.finish()
