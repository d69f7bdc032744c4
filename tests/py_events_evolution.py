#!/usr/bin/python3
"""Schema evolution of ShardStaged and ShardRejected, both ways, against
Debian's python3-avro: the optional `producer` field ("host/pid" of the
publisher, default null) was added after version 1 was published.

The old schemas are schemas/ShardStaged.v1.avsc and ShardRejected.v1.avsc,
the files as they were published (taken from git history when the field
was added) and embedded so that segforge keeps reading their events:
  1. an event python writes with the OLD schema is read by segforge's new
     decoder (producer null), told by the old fingerprint alone;
  2. an event segforge writes with the NEW schema, producer set, is read by
     python with the OLD schema as reader schema (Avro schema resolution
     drops the field), and with the new schema the field reads back;
  3. python writing the new schema with a producer: segforge reads it;
  4. a producer that breaks its rule is refused at the edge.

Environment: SEGFORGE (the program), SF_SRC (source tree), SF_TEST_TMP.
"""
import io
import json
import os
import struct
import sys

import avro.io

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_events_interop as ei  # noqa: E402  (the shared Avro helpers)

check, run = ei.check, ei.run


def old_schema(t):
    return ei.load(os.path.join(ei.SRC, "schemas", t + ".v1.avsc"))


def resolve_read(writer, reader, data):
    """Python's Avro schema resolution: data written with writer, read as reader."""
    bio = io.BytesIO(data)
    datum = avro.io.DatumReader(writer, reader).read(avro.io.BinaryDecoder(bio))
    return datum, len(data) - bio.tell()


def main():
    os.makedirs(ei.TMP, exist_ok=True)
    events = {"ShardStaged": dict(ei.STAGED_JSON, producer="worker-7.example/4242"),
              "ShardRejected": dict(ei.REJECTED_JSON, producer="worker-7.example/4242")}
    for t, new_json in events.items():
        new, old = ei.SCHEMAS[t], old_schema(t)
        old_fields = [f.name for f in old.fields]
        check("producer" not in old_fields and [f.name for f in new.fields] ==
              old_fields + ["producer"], "%s: v1 is the schema without producer" % t)
        prod = new.fields_dict["producer"]
        check(prod.has_default and prod.default is None,
              "%s: producer is optional with default null" % t)
        old_json = {k: v for k, v in new_json.items() if k != "producer"}

        # 1. Old writer, new reader (segforge).
        data = ei.single_object(old, ei.to_datum(old_json))
        got = json.loads(run(["decode", "--envelope"], data).stdout)
        check(got["event"] == dict(old_json, producer=None) and not got["current"],
              "%s: segforge reads a v1 event, producer null" % t)
        fp = "%016x" % ei.crc64_avro(old.canonical_form.encode())
        got = run(["decode", "--compact"], ei.single_object(old, ei.to_datum(old_json)))
        check(json.loads(got.stdout) == dict(old_json, producer=None),
              "%s: v1 (fingerprint %s) decodes without a writer schema given" % (t, fp))

        # 2. New writer (segforge), old and new readers (python).
        data = run(["encode", "--type", t], json.dumps(new_json).encode()).stdout
        check(data[2:10] == struct.pack("<Q", ei.crc64_avro(new.canonical_form.encode())),
              "%s: segforge writes the new schema's fingerprint" % t)
        datum, left = resolve_read(new, old, data[10:])
        check(left == 0 and ei.from_datum(datum) == old_json,
              "%s: python reads segforge's new event with the v1 reader schema" % t)
        datum, left = resolve_read(new, new, data[10:])
        check(left == 0 and ei.from_datum(datum) == new_json,
              "%s: python reads the producer back with the new schema" % t)
        no_prod = dict(new_json, producer=None)
        data = run(["encode", "--type", t], json.dumps(no_prod).encode()).stdout
        datum, left = resolve_read(new, old, data[10:])
        check(left == 0 and ei.from_datum(datum) == old_json,
              "%s: a null producer is read by the v1 reader too" % t)

        # 3. Python writes the new schema; segforge reads the producer.
        got = run(["decode", "--compact"], ei.single_object(new, ei.to_datum(new_json)))
        check(json.loads(got.stdout) == new_json,
              "%s: segforge reads python's producer" % t)

    # 4. A producer that breaks the text rule is refused at the edge.
    bad = dict(events["ShardStaged"], producer="host\x01/1")
    p = run(["decode"], ei.single_object(ei.SCHEMAS["ShardStaged"], ei.to_datum(bad)),
            expect_ok=False)
    check(p.returncode == 1 and b"INVALID_FIELD" in p.stderr and b"producer" in p.stderr,
          "a producer with a control character is INVALID_FIELD: %s" %
          p.stderr.decode().strip())

    if ei.failures:
        print("%d check(s) failed" % len(ei.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
