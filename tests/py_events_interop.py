#!/usr/bin/python3
"""Interop of segforge's event codec with an independent Avro implementation.

Debian's python3-avro reads the schemas/*.avsc files itself and:
  - computes each schema's Parsing Canonical Form, whose CRC-64-AVRO (the
    specification's algorithm, written out below) must equal segforge's
    fingerprint;
  - decodes the bytes `segforge events encode` writes, in both framings;
  - writes events (current and an older schema version) that
    `segforge events decode` must read, and bad ones it must reject with
    the right reason code.
Fragment bitmaps are read and written with a small implementation of
CRoaring's documented portable format, so no byte is taken on trust.

Environment: SEGFORGE (the program), SF_SRC (source tree), SF_TEST_TMP.
"""
import io
import json
import os
import struct
import subprocess
import sys

import avro.io
import avro.schema

SEGFORGE = os.environ.get("SEGFORGE", "segforge")
SRC = os.environ.get("SF_SRC", os.path.join(os.path.dirname(__file__), ".."))
TMP = os.environ.get("SF_TEST_TMP", "/tmp")
TYPES = ["ShardStaged", "SegmentsCommitted", "ShardRejected", "SegmentsCompacted"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


# ---- CRC-64-AVRO, from the specification ----------------------------------
EMPTY = 0xC15D213AA4D7A795
TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
    TABLE.append(fp)


def crc64_avro(data):
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp


# ---- CRoaring portable serialization (array, bitmap and run containers) -----
def roaring_write(values):
    """No-run cookie; array containers up to 4096 values, bitmaps above."""
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


def roaring_read(buf):
    cookie, = struct.unpack_from("<I", buf, 0)
    pos = 4
    runs = None
    if cookie & 0xFFFF == 12347:
        size = (cookie >> 16) + 1
        runs = buf[pos:pos + (size + 7) // 8]
        pos += (size + 7) // 8
    else:
        assert cookie == 12346, "bad roaring cookie %x" % cookie
        size, = struct.unpack_from("<I", buf, pos)
        pos += 4
    heads = [struct.unpack_from("<HH", buf, pos + 4 * i) for i in range(size)]
    pos += 4 * size
    if runs is None or size >= 4:
        pos += 4 * size  # offsets; containers follow in order anyway
    values = []
    for i, (key, card1) in enumerate(heads):
        card = card1 + 1
        if runs is not None and runs[i // 8] >> (i % 8) & 1:
            n, = struct.unpack_from("<H", buf, pos)
            pos += 2
            for _ in range(n):
                start, length = struct.unpack_from("<HH", buf, pos)
                pos += 4
                values += [(key << 16) | x for x in range(start, start + length + 1)]
        elif card > 4096:
            words = struct.unpack_from("<1024Q", buf, pos)
            pos += 8192
            values += [(key << 16) | (w * 64 + b) for w in range(1024) for b in range(64)
                       if words[w] >> b & 1]
        else:
            values += [(key << 16) | x for x in struct.unpack_from("<%dH" % card, buf, pos)]
            pos += 2 * card
    assert pos == len(buf), "roaring: %d trailing bytes" % (len(buf) - pos)
    return values


def ranges(values):
    out, vs = [], sorted(values)
    i = 0
    while i < len(vs):
        j = i
        while j + 1 < len(vs) and vs[j + 1] == vs[j] + 1:
            j += 1
        out.append(str(vs[i]) if i == j else "%d-%d" % (vs[i], vs[j]))
        i = j + 1
    return ",".join(out)


def parse_ranges(s):
    vals = []
    for part in s.split(","):
        a, _, z = part.partition("-")
        vals += range(int(a), int(z or a) + 1)
    return vals


# ---- schemas, parsed by python avro from the .avsc files -------------------
def load(path_or_json, extra=None):
    names = avro.schema.Names()
    info = json.load(open(os.path.join(SRC, "schemas", "SegmentInfo.avsc")))
    avro.schema.make_avsc_object(info, names)
    obj = path_or_json if isinstance(path_or_json, dict) else json.load(open(path_or_json))
    return avro.schema.make_avsc_object(obj, names)


SCHEMAS = {t: load(os.path.join(SRC, "schemas", t + ".avsc")) for t in TYPES}


def run(args, data=b"", expect_ok=True):
    p = subprocess.run([SEGFORGE, "events"] + args, input=data, capture_output=True)
    if expect_ok and p.returncode != 0:
        raise SystemExit("segforge events %s failed: %s" % (" ".join(args), p.stderr.decode()))
    return p


def avro_decode(schema, data):
    bio = io.BytesIO(data)
    datum = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(bio))
    return datum, len(data) - bio.tell()


def avro_encode(schema, datum):
    bio = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(bio))
    return bio.getvalue()


def single_object(schema, datum):
    fp = crc64_avro(schema.canonical_form.encode())
    return b"\xc3\x01" + struct.pack("<Q", fp) + avro_encode(schema, datum)


# ---- events, as JSON for segforge and as datums for python -------------------
STAGED_JSON = {
    "event_id": "ev-1", "dataset_uri": "file:///data/d\u00e9j\u00e0", "index_name": "embedding_idx",
    "column": "embedding", "staging_id": "job-7", "shard_id": "shard-3",
    "shard_path": "shards/3.sfs", "shard_bytes": 123456789012, "num_rows": 100000,
    "fragments": "0-63,70,5000-10000", "expected_fragments": "0-10000,70000-70010",
    "index_type": "IVF_PQ", "metric": "COSINE", "dim": 768, "num_partitions": 4096,
    "quantizer_checksum": "0xfedcba9876543210", "target_segment_bytes": 1073741824,
    "staged_at_ms": 1700000000123, "producer": "worker-7.example/4242",
}
COMMITTED_JSON = {
    "event_id": "job-7@12", "dataset_uri": "file:///data/d", "index_name": "embedding_idx",
    "staging_id": "job-7", "catalog_version": 12,
    "segments": [
        {"segment_id": "seg-a", "path": "_indices/segments/seg-a.sfs", "bytes": 10,
         "num_rows": 5, "fragments": "0-63", "shard_ids": ["shard-1", "shard-2"]},
        {"segment_id": "seg-b", "path": "_indices/segments/seg-b.sfs", "bytes": 20,
         "num_rows": 6, "fragments": "64-99,1000000", "shard_ids": ["shard-3"]}],
    "total_rows": 11, "num_shards": 3, "first_staged_at_ms": 5, "committed_at_ms": 9,
}
REJECTED_JSON = {
    "reason": "PATH_ESCAPE", "message": "shard_path '../x' climbs out",
    "staging_id": "job-7", "shard_id": None, "source_topic": "segforge.shards.staged",
    "source_partition": 3, "source_offset": 4242, "original_value": "c301deadbeef",
    "rejected_at_ms": 77, "producer": None,
}
COMPACTED_JSON = {
    "event_id": "compact-00112233aabbccdd@13", "dataset_uri": "/data/d",
    "index_name": "embedding_idx", "catalog_version": 13,
    "removed_segment_ids": ["seg-a", "seg-b"],
    "added_segments": [
        {"segment_id": "compact-00112233aabbccdd",
         "path": "segments/compact-00112233aabbccdd.sfseg", "bytes": 29, "num_rows": 11,
         "fragments": "0-99,1000000"}],
    "total_rows": 11, "bytes_read": 30, "bytes_written": 29, "compacted_at_ms": 1700000000999,
}
EVENTS = {"ShardStaged": STAGED_JSON, "SegmentsCommitted": COMMITTED_JSON,
          "ShardRejected": REJECTED_JSON, "SegmentsCompacted": COMPACTED_JSON}
BITMAPS = {"fragments", "expected_fragments"}


def to_datum(j):
    """segforge's JSON form -> the Avro datum python writes."""
    if isinstance(j, list):
        return [to_datum(x) for x in j]
    if not isinstance(j, dict):
        return j
    d = {}
    for k, v in j.items():
        if k in BITMAPS:
            d[k] = roaring_write(parse_ranges(v))
        elif k == "quantizer_checksum":
            d[k] = struct.unpack("<q", struct.pack("<Q", int(v, 16)))[0]
        elif k == "original_value":
            d[k] = bytes.fromhex(v)
        else:
            d[k] = to_datum(v)
    return d


def from_datum(d):
    """A datum python read -> segforge's JSON form, to compare."""
    if isinstance(d, list):
        return [from_datum(x) for x in d]
    if not isinstance(d, dict):
        return d
    j = {}
    for k, v in d.items():
        if k in BITMAPS:
            j[k] = ranges(roaring_read(v))
        elif k == "quantizer_checksum":
            j[k] = "0x%016x" % (v & 0xFFFFFFFFFFFFFFFF)
        elif k == "original_value":
            j[k] = v.hex()
        else:
            j[k] = from_datum(v)
    return j


def main():
    os.makedirs(TMP, exist_ok=True)
    # 1. Canonical forms and fingerprints agree with python's.
    for t in TYPES:
        cf = SCHEMAS[t].canonical_form
        mine = run(["schema", "--type", t, "--canonical"]).stdout.decode().strip()
        check(mine == cf, "%s: canonical form equals python avro's" % t)
        fp = int(run(["schema", "--type", t, "--fingerprint"]).stdout, 16)
        check(fp == crc64_avro(cf.encode()),
              "%s: fingerprint %016x is CRC-64-AVRO of the canonical form" % (t, fp))
        if hasattr(SCHEMAS[t], "fingerprint"):
            own = int.from_bytes(SCHEMAS[t].fingerprint("CRC-64-AVRO"), "little")
            check(own == fp, "%s: fingerprint equals python avro's own" % t)

    # 2. segforge writes, python reads: single-object and Confluent framing.
    for t in TYPES:
        data = run(["encode", "--type", t], json.dumps(EVENTS[t]).encode()).stdout
        fp = crc64_avro(SCHEMAS[t].canonical_form.encode())
        check(data[:2] == b"\xc3\x01" and data[2:10] == struct.pack("<Q", fp),
              "%s: single-object header carries the little-endian fingerprint" % t)
        datum, left = avro_decode(SCHEMAS[t], data[10:])
        check(left == 0, "%s: python reads the whole datum" % t)
        check(from_datum(datum) == EVENTS[t], "%s: python reads what segforge wrote" % t)
        data = run(["encode", "--type", t, "--schema-id", "%s=%d" % (t, 300 + len(t))],
                   json.dumps(EVENTS[t]).encode()).stdout
        check(data[:5] == b"\x00" + struct.pack(">I", 300 + len(t)),
              "%s: Confluent header is 00 + big-endian schema id" % t)
        datum, left = avro_decode(SCHEMAS[t], data[5:])
        check(left == 0 and from_datum(datum) == EVENTS[t],
              "%s: python reads the Confluent-framed event" % t)

    # 3. python writes, segforge reads.
    for t in TYPES:
        data = single_object(SCHEMAS[t], to_datum(EVENTS[t]))
        got = json.loads(run(["decode", "--compact"], data).stdout)
        check(got == EVENTS[t], "%s: segforge reads what python wrote" % t)
        data = b"\x00" + struct.pack(">I", 77) + avro_encode(SCHEMAS[t], to_datum(EVENTS[t]))
        got = json.loads(run(["decode", "--framing", "confluent", "--schema-id",
                              "%s=77" % t], data).stdout)
        check(got == EVENTS[t], "%s: segforge reads python's Confluent framing" % t)

    # 4. Evolution: an older ShardStaged without target_segment_bytes, with a
    # field the current version dropped, and with two fields swapped.
    old = json.load(open(os.path.join(SRC, "schemas", "ShardStaged.avsc")))
    fields = [f for f in old["fields"] if f["name"] != "target_segment_bytes"]
    i = [f["name"] for f in fields].index("shard_bytes")
    fields[i], fields[i + 1] = fields[i + 1], fields[i]
    fields.insert(0, {"name": "priority", "type": "int", "doc": "dropped later"})
    old["fields"] = fields
    old_schema = load(old)
    old_path = os.path.join(TMP, "ShardStaged.v0.avsc")
    json.dump(old, open(old_path, "w"))
    datum = to_datum(STAGED_JSON)
    del datum["target_segment_bytes"]
    datum["priority"] = 5
    data = single_object(old_schema, datum)
    p = run(["decode"], data, expect_ok=False)
    check(p.returncode == 1 and b"UNKNOWN_SCHEMA" in p.stderr,
          "an unregistered older version is UNKNOWN_SCHEMA")
    got = json.loads(run(["decode", "--writer-schema", old_path, "--envelope"], data).stdout)
    want = dict(STAGED_JSON, target_segment_bytes=None)
    check(got["event"] == want and not got["current"],
          "an older registered version resolves: new field defaulted, dropped field ignored")

    # 5. Bad events written by python are rejected with their reason.
    bad = [("PATH_ESCAPE", dict(STAGED_JSON, shard_path="../../etc/x"), b""),
           ("INVALID_FIELD", dict(STAGED_JSON, dim=0), b""),
           ("INVALID_FIELD", dict(STAGED_JSON, fragments="20000"), b""),
           ("DECODE_ERROR", STAGED_JSON, b"\x00")]
    for reason, ev, tail in bad:
        data = single_object(SCHEMAS["ShardStaged"], to_datum(ev)) + tail
        p = run(["decode"], data, expect_ok=False)
        check(p.returncode == 1 and reason.encode() in p.stderr,
              "python-written bad event gives %s: %s" % (reason, p.stderr.decode().strip()))

    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
