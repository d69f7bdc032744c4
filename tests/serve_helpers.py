"""Helpers of the `segforge serve` tests (tests/py_serve*.py) and the
end-to-end benchmark (bench/bench_e2e.sh): datasets staged with the real
program, raw events produced with python3-kafka, output topics read back with
an independent client and decoded with python3-avro from schemas/*.avsc.

Every background process is started through `spawn`, killed on exit (atexit
and SIGTERM/SIGINT), and every wait is bounded.
"""
import atexit
import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time

import avro.io
import avro.schema
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

SEGFORGE = os.environ.get("SEGFORGE", "segforge")
SRC = os.environ.get("SF_SRC", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TMP = os.environ.get("SF_TEST_TMP", "/tmp")
STAGED, COMMITTED, REJECTED = ("segforge.shards.staged", "segforge.segments.committed",
                               "segforge.shards.rejected")
COMPACTED = "segforge.segments.compacted"
failures = []
_procs = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def finish():
    """Exit status of the test: 1 when a check failed."""
    if failures:
        print("%d check(s) failed:\n  %s" % (len(failures), "\n  ".join(failures)))
        sys.exit(1)
    print("all checks passed")
    sys.exit(0)


# ---- processes -----------------------------------------------------------------
def _cleanup(*_):
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    _procs.clear()


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda s, f: (_cleanup(), sys.exit(128 + s)))


def spawn(args, env=None, stdout=subprocess.PIPE, stderr=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(args, stdout=stdout, stderr=stderr, env=e)
    _procs.append(p)
    return p


def run(args, **kw):
    p = subprocess.run(args, capture_output=True, timeout=kw.pop("timeout", 120), **kw)
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(args), p.returncode,
                                                 p.stderr.decode(errors="replace")))
    return p


def start_broker(partitions=4):
    """`segforge broker` as its own process: (process, bootstrap address)."""
    p = spawn([SEGFORGE, "broker", "--partitions", str(partitions)])
    line = p.stdout.readline().decode().strip()
    if not line:
        raise SystemExit("segforge broker printed no address")
    return p, line


class Serve:
    """A `segforge serve` process logging to a file."""

    def __init__(self, args, log, env=None, embedded=False):
        self.log = log
        self.logf = open(log, "wb")
        self.p = spawn([SEGFORGE, "serve"] + args, env=env, stderr=self.logf)
        self.bootstrap = None
        if embedded:
            # Bounded: a serve that never prints its address fails the test
            # with its log instead of hanging it.
            ready, _, _ = select.select([self.p.stdout], [], [], 60)
            line = self.p.stdout.readline().decode().strip() if ready else ""
            if not line.startswith("bootstrap.servers="):
                self.kill9()
                raise SystemExit("serve printed no bootstrap address within 60 s: %r; log:\n%s"
                                 % (line, "\n".join(self.lines()[-20:])))
            self.bootstrap = line.split("=", 1)[1]

    def lines(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace").splitlines()

    def wait_log(self, needle, timeout=30, count=1):
        end = time.time() + timeout
        while time.time() < end:
            if sum(needle in l for l in self.lines()) >= count:
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout=30):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None

    def kill9(self):
        self.p.kill()
        self.p.wait()

    def metrics_port(self, timeout=10):
        """The port of --metrics-addr HOST:0, from the metrics_serving log line."""
        if not self.wait_log("event=metrics_serving", timeout):
            raise SystemExit("serve logged no metrics_serving line")
        line = [l for l in self.lines() if "event=metrics_serving" in l][0]
        return int(line.split("port=")[1].split()[0])

    def scrape(self, path):
        """(HTTP status, body) of GET path on the metrics address."""
        import urllib.error
        import urllib.request
        url = "http://127.0.0.1:%d%s" % (self.metrics_port(), path)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:  # not listening (any more)
            return 0, str(e)

    def metrics(self):
        """The samples of /metrics as {name: value}."""
        status, text = self.scrape("/metrics")
        vals = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, v = line.rpartition(" ")
                vals[name] = float(v)
        return vals


# ---- fragment sets (CRoaring portable format) -------------------------------------
def roaring_write(values):
    """CRoaring's portable format without runs: array containers up to 4096
    values, bitmaps above (what bench/bench_e2e.py encodes events with)."""
    chunks = {}
    for v in sorted(set(values)):
        chunks.setdefault(v >> 16, []).append(v & 0xFFFF)
    keys = sorted(chunks)
    out = struct.pack("<II", 12346, len(keys))
    for k in keys:
        out += struct.pack("<HH", k, len(chunks[k]) - 1)
    bodies = []
    for k in keys:
        lows = chunks[k]
        if len(lows) > 4096:
            words = [0] * 1024
            for x in lows:
                words[x >> 6] |= 1 << (x & 63)
            bodies.append(struct.pack("<1024Q", *words))
        else:
            bodies.append(struct.pack("<%dH" % len(lows), *lows))
    offset = len(out) + 4 * len(keys)
    for b in bodies:
        out += struct.pack("<I", offset)
        offset += len(b)
    return out + b"".join(bodies)


def roaring_read(b):
    cookie, = struct.unpack_from("<I", b, 0)
    pos = 4
    runs = None
    if cookie & 0xFFFF == 12347:
        n = (cookie >> 16) + 1
        runs = b[pos:pos + (n + 7) // 8]
        pos += (n + 7) // 8
    else:
        n, = struct.unpack_from("<I", b, 4)
        pos = 8
    hdr = [struct.unpack_from("<HH", b, pos + 4 * i) for i in range(n)]
    pos += 4 * n
    if runs is None or n >= 4:
        pos += 4 * n  # offsets
    out = []
    for i, (key, card1) in enumerate(hdr):
        base = key << 16
        if runs is not None and runs[i // 8] >> (i % 8) & 1:
            nr, = struct.unpack_from("<H", b, pos)
            pos += 2
            for _ in range(nr):
                s, l = struct.unpack_from("<HH", b, pos)
                pos += 4
                out += range(base + s, base + s + l + 1)
        elif card1 + 1 > 4096:
            words = struct.unpack_from("<1024Q", b, pos)
            pos += 8192
            out += [base + 64 * w + k for w, x in enumerate(words) for k in range(64) if x >> k & 1]
        else:
            out += [base + x for x in struct.unpack_from("<%dH" % (card1 + 1), b, pos)]
            pos += 2 * (card1 + 1)
    return out


# ---- events ----------------------------------------------------------------------
def _load(name):
    names = avro.schema.Names()
    info = json.load(open(os.path.join(SRC, "schemas", "SegmentInfo.avsc")))
    avro.schema.make_avsc_object(info, names)
    return avro.schema.make_avsc_object(json.load(open(os.path.join(SRC, "schemas", name + ".avsc"))), names)


SCHEMAS = {t: _load(t) for t in ("ShardStaged", "SegmentsCommitted", "ShardRejected",
                                 "SegmentsCompacted")}

EMPTY = 0xC15D213AA4D7A795
_T = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (EMPTY & -(_fp & 1))
    _T.append(_fp)


def fingerprint(schema):
    fp = EMPTY
    for c in schema.canonical_form.encode():
        fp = (fp >> 8) ^ _T[(fp ^ c) & 0xFF]
    return fp


def decode(value, type_name):
    """A single-object encoded event: the 10-byte header (C3 01 + the
    fingerprint of the schema) is checked, then the datum decoded."""
    schema = SCHEMAS[type_name]
    if value[:2] != b"\xc3\x01" or struct.unpack_from("<Q", value, 2)[0] != fingerprint(schema):
        raise ValueError("not a single-object %s: %r" % (type_name, value[:10]))
    bio = io.BytesIO(value[10:])
    return avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(bio))


def encode_staged(ev):
    """Bytes of a ShardStaged (a dict in `segforge events` JSON) by the real encoder."""
    p = subprocess.run([SEGFORGE, "events", "encode", "--type", "ShardStaged", "--no-validate"],
                       input=json.dumps(ev).encode(), capture_output=True, timeout=30)
    if p.returncode:
        raise SystemExit("events encode: " + p.stderr.decode())
    return p.stdout


# ---- datasets ---------------------------------------------------------------------
class Dataset:
    """Generated vectors, and jobs trained and staged by the real program.
    Row i is fragment i // rpf."""

    def __init__(self, root, rows=8000, dim=16, rpf=500, nlist=16, index_type="IVF_FLAT"):
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        self.gen = os.path.join(root, "gen")
        self.ds = os.path.join(root, "ds")
        os.makedirs(self.ds)
        self.rows, self.dim, self.rpf, self.nlist, self.type = rows, dim, rpf, nlist, index_type
        run([SEGFORGE, "gen", "--out", self.gen, "--rows", str(rows), "--dim", str(dim),
             "--queries", "200", "--clusters", "50", "--k", "10"])
        self.base = os.path.join(self.gen, "base.fvecs")

    def staging(self, job):
        return os.path.join(self.ds, "_indices", "_staging", job)

    def train(self, job, index_type=None, copy_from=None):
        root = self.staging(job)
        os.makedirs(root, exist_ok=True)
        if copy_from:
            shutil.copy(os.path.join(self.staging(copy_from), "quantizer"), root)
            return
        args = [SEGFORGE, "train", "--vectors", self.base, "--out", root, "--index-type",
                index_type or self.type, "--metric", "L2", "--nlist", str(self.nlist)]
        if (index_type or self.type) == "IVF_PQ":
            args += ["--pq-m", str(self.dim // 4)]
        run(args)

    def stage(self, job, shard, frags, expected, event_id=None, tsb=None, index="idx"):
        """Writes the shard and returns (event dict, encoded bytes)."""
        p = run([SEGFORGE, "stage", "--vectors", self.base, "--staging", self.staging(job),
                 "--fragments", frags, "--rows-per-fragment", str(self.rpf), "--shard-id", shard,
                 "--json"])
        info = json.loads(p.stdout)
        ins = json.loads(run([SEGFORGE, "inspect", "--json", info["path"]]).stdout)
        ev = {
            "event_id": event_id or "%s/%s" % (job, shard), "dataset_uri": self.ds,
            "index_name": index, "column": "emb", "staging_id": job, "shard_id": shard,
            "shard_path": shard + ".sfshard", "shard_bytes": ins["bytes"],
            "num_rows": ins["num_rows"], "fragments": frags, "expected_fragments": expected,
            "index_type": ins["index_type"], "metric": ins["metric"], "dim": ins["dim"],
            "num_partitions": ins["nlist"], "quantizer_checksum": "0x" + ins["quantizer_checksum"],
            "target_segment_bytes": tsb, "staged_at_ms": int(time.time() * 1000),
        }
        return ev, encode_staged(ev)

    def recall(self, index="idx"):
        p = run([SEGFORGE, "search", "--dataset", self.ds, "--index", index, "--queries",
                 os.path.join(self.gen, "query.fvecs"), "--groundtruth",
                 os.path.join(self.gen, "gt.ivecs"), "--rows-per-fragment", str(self.rpf),
                 "--k", "10", "--nprobe", str(self.nlist), "--json"])
        return json.loads(p.stdout)

    def catalog(self):
        p = subprocess.run([SEGFORGE, "inspect", "--dataset", self.ds, "--json"],
                           capture_output=True, timeout=60)
        return json.loads(p.stdout) if p.returncode == 0 else None


# ---- Kafka ------------------------------------------------------------------------
def producer(bootstrap):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                         api_version_auto_timeout_ms=10000)


def send(prod, key, value, topic=STAGED):
    prod.send(topic, key=key.encode() if key is not None else None, value=value).get(timeout=30)


def group_offsets(bootstrap, group="segforge-finalizer", topic=STAGED):
    """The offsets the consumer group has committed (0 where none) and the
    end offsets, for every partition of the topic: two dicts keyed by
    TopicPartition."""
    cons = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=False, api_version_auto_timeout_ms=10000)
    tps = [TopicPartition(topic, p) for p in cons.partitions_for_topic(topic)]
    ends = cons.end_offsets(tps)
    committed = {tp: cons.committed(tp) or 0 for tp in tps}
    cons.close()
    return committed, ends


def read_topic(bootstrap, topic, type_name, until=None, timeout=60, raw=False):
    """Every message of the topic from the beginning, decoded, as a list of
    (partition, offset, key, datum); reads until until(list) is true or the
    timeout runs out (then returns what it has)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=500, fetch_max_wait_ms=50,
                      api_version_auto_timeout_ms=10000)
    parts = None
    end = time.time() + timeout
    while parts is None and time.time() < end:
        parts = c.partitions_for_topic(topic)
        if not parts:
            parts = None
            time.sleep(0.2)
    if not parts:
        c.close()
        return []
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = []
    while time.time() < end:
        batch = c.poll(timeout_ms=200)
        for tp, msgs in batch.items():
            for m in msgs:
                v = m.value if raw else decode(m.value, type_name)
                out.append((m.partition, m.offset, m.key, v))
        if until and until(out):
            break
        if until is None and not batch:
            break
    c.close()
    return out
