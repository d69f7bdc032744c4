#!/usr/bin/python3
"""Workers written in Python, as on Ray or Spark: a pool of 4 worker
processes (multiprocessing, spawned) each stages its shard from numpy arrays
with segforge.ShardWriter and announces it with segforge.publish (librdkafka
properties as keyword arguments); `segforge serve` on its embedded broker
commits the job; the driver reads SegmentsCommitted with python3-kafka and
python3-avro, waits for the commit with segforge.wait_committed, and searches:
IVF_FLAT at nprobe = nlist equals numpy's brute force exactly. Then the
producer's refusals: an unknown property, a shard outside the staging root,
fragments outside the expected ones, a broker that does not answer.
"""
import multiprocessing
import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_python  # noqa: E402

api_python.setup()
import numpy as np  # noqa: E402

import segforge  # noqa: E402
import serve_helpers as h  # noqa: E402

RPF, DIM, NLIST, WORKERS, JOB = 400, 16, 8, 4, "job-py"
ROOT = os.path.join(h.TMP, "py_api_kafka")
DS = os.path.join(ROOT, "ds")


def fragment_rows(f):
    """Fragment f's vectors and row ids, the same in every process."""
    rng = np.random.default_rng(1000 + f)
    x = rng.integers(-5, 6, size=(RPF, DIM)).astype(np.float32)
    ids = (np.uint64(f) << np.uint64(32)) | np.arange(RPF, dtype=np.uint64)
    return x, ids


_barrier = None


def _init(barrier):
    global _barrier
    _barrier = barrier


def worker(args):
    """One worker process: fragments 2w and 2w+1, added in reverse order.
    The barrier holds each process to one task, so that the 4 shards are
    written by 4 processes at once."""
    w, bootstrap = args
    _barrier.wait(180)
    staging = segforge.staging_root(DS, JOB)
    with segforge.ShardWriter(staging, "w%d" % w, "%d-%d" % (2 * w, 2 * w + 1)) as sw:
        for f in (2 * w + 1, 2 * w):
            x, ids = fragment_rows(f)
            sw.add(x, ids)
    rep = segforge.publish(sw, dataset=DS, index="idx", column="emb", staging_id=JOB,
                           expected_fragments="0-%d" % (2 * WORKERS - 1),
                           bootstrap_servers=bootstrap, client_id="py-worker-%d" % w)
    return w, os.getpid(), sw.path, sw.rows, sw.fragments, tuple(rep)


def main():
    check = h.check
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    parts = [fragment_rows(f) for f in range(2 * WORKERS)]
    x = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    segforge.train(x, index_type="IVF_FLAT", metric="L2", nlist=NLIST,
                   out=segforge.staging_root(DS, JOB))

    serve = h.Serve(["--partitions", "4", "--log-level", "debug"],
                    os.path.join(ROOT, "serve.log"), embedded=True)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WORKERS, initializer=_init, initargs=(ctx.Barrier(WORKERS),)) as pool:
        # map would wait forever for a task whose process died (Pool restarts
        # the process but not the task): a bounded wait turns that into a
        # failure that says so.
        res = pool.map_async(worker, [(w, serve.bootstrap) for w in range(WORKERS)],
                             chunksize=1)
        try:
            done = res.get(300)
        except multiprocessing.TimeoutError:
            check(False, "the 4 worker processes finished within 300 s (one died or hung)")
            serve.stop()
            h.finish()
    check(sorted(d[0] for d in done) == list(range(WORKERS)), "the 4 workers returned")
    pids = {d[1] for d in done}
    check(len(pids) == WORKERS and os.getpid() not in pids,
          "the shards were written by %d worker processes at once" % len(pids))
    for w, _, path, rows, frags, rep in done:
        check(os.path.isfile(path) and rows == 2 * RPF and frags == "%d-%d" % (2 * w, 2 * w + 1),
              "w%d: %s, %d rows, fragments %s" % (w, os.path.basename(path), rows, frags))
    reps = [d[5] for d in done]
    check(len({r[0] for r in reps}) == 1, "the 4 events share one partition (keyed by staging "
          "id): %s" % sorted({r[0] for r in reps}))
    check(len({r[1] for r in reps}) == WORKERS,
          "each event got its own offset: %s" % sorted(r[1] for r in reps))

    staged = h.read_topic(serve.bootstrap, h.STAGED, "ShardStaged",
                          until=lambda l: len(l) >= WORKERS, timeout=30)
    by_id = {m[3]["event_id"]: (m[0], m[1], m[3]) for m in staged}
    check(sorted(by_id) == sorted(r[2] for r in reps),
          "the ShardStaged events read back are the 4 reported: %s" % sorted(by_id))
    for part, off, sev in by_id.values():
        w = int(sev["shard_id"][1:])
        check((part, off) in {(r[0], r[1]) for r in reps} and sev["num_rows"] == 2 * RPF and
              h.roaring_read(sev["fragments"]) == [2 * w, 2 * w + 1] and sev["dataset_uri"] == DS and
              sev["index_type"] == "IVF_FLAT" and sev["dim"] == DIM,
              "%s's ShardStaged says what its file holds: %d rows, fragments %s" %
              (sev["shard_id"], sev["num_rows"], h.roaring_read(sev["fragments"])))
    got = h.read_topic(serve.bootstrap, h.COMMITTED, "SegmentsCommitted",
                       until=lambda l: any(m[3]["staging_id"] == JOB for m in l), timeout=60)
    evs = [m[3] for m in got if m[3]["staging_id"] == JOB]
    check(len(evs) == 1, "serve announced one SegmentsCommitted for the job (%d)" % len(evs))
    if not evs:
        serve.stop()
        h.finish()
    ev = evs[0]
    shards = sorted(s for seg in ev["segments"] for s in seg["shard_ids"])
    check(shards == ["w%d" % w for w in range(WORKERS)],
          "its segments hold the 4 workers' shards: %s" % shards)
    frags = sorted(f for seg in ev["segments"] for f in h.roaring_read(seg["fragments"]))
    check(frags == list(range(2 * WORKERS)), "... and cover fragments 0-7")
    v = segforge.wait_committed(DS, JOB, timeout=30)
    check(v == ev["catalog_version"], "wait_committed returns the announced catalog version %d"
          % v)

    ix = segforge.Index(DS, "idx")
    check(ix.num_rows == len(ids) and ix.version == v, "the index holds every row, version %d" %
          ix.version)
    q = np.random.default_rng(7).integers(-5, 6, size=(50, DIM)).astype(np.float32)
    got_i, got_d = ix.search(q, k=10, nprobe=NLIST)
    d = ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    want = np.stack([ids[np.lexsort((ids, d[j]))[:10]] for j in range(len(q))])
    want_d = np.stack([np.sort(d[j])[:10] for j in range(len(q))])
    check(np.array_equal(got_i, want), "search at nprobe=nlist equals numpy's brute force "
          "(%d of %d ids differ)" % ((got_i != want).sum(), want.size))
    check(np.array_equal(got_d.astype(np.float64), want_d), "... distances too")
    ix.close()

    # ---- the producer's refusals ------------------------------------------------------
    staging = segforge.staging_root(DS, JOB)
    shard = os.path.join(staging, "w0.sfshard")
    ev_args = dict(dataset=DS, index="idx", column="emb", staging_id=JOB,
                   expected_fragments="0-7")
    try:
        segforge.Producer(bootstrap_servers=serve.bootstrap, no_such_property="1")
        check(False, "an unknown librdkafka property is refused")
    except segforge.InvalidError as e:
        check("no.such.property" in e.message, "an unknown librdkafka property is refused, "
              "named: %s" % e)
    with segforge.Producer({"bootstrap.servers": serve.bootstrap}, message_timeout_ms=20000) as p:
        outside = os.path.join(ROOT, "w0.sfshard")
        shutil.copy(shard, outside)
        try:
            p.publish(outside, **ev_args)
            check(False, "a shard outside the staging root is refused")
        except segforge.InvalidError as e:
            check(e.code == 1, "a shard outside the staging root is refused: %s" % e)
        try:
            p.publish(shard, **dict(ev_args, expected_fragments="2-7"))
            check(False, "fragments outside expected_fragments are refused")
        except segforge.DecodeError as e:
            check(e.code == 14, "fragments outside expected_fragments: DecodeError: %s" % e)
        try:
            p.publish(shard, **ev_args, colum="emb")
            check(False, "a misspelt event option is refused")
        except segforge.InvalidError as e:
            check("colum" in e.message, "a misspelt event option is refused: %s" % e)
    try:
        segforge.publish(shard, **ev_args, timeout=1.0, bootstrap_servers="127.0.0.1:1",
                         message_timeout_ms=500)
        check(False, "a broker that does not answer fails the publish")
    except segforge.IoError as e:
        check(e.code == 2, "a broker that does not answer: IoError: %s" % e)
    check(serve.stop() == 0, "serve exits 0 on SIGTERM")
    h.finish()


if __name__ == "__main__":
    main()
