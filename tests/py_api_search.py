#!/usr/bin/python3
"""The Python package (python/segforge) without a broker, against numpy:

  - IVF_FLAT searched at nprobe = nlist equals numpy's brute force exactly:
    ids and distances, ties to the smaller row id (integer-valued vectors,
    so that every distance is exact in float32 and ties are real), across
    shards written in shuffled chunks and several segments;
  - IVF_SQ and IVF_PQ: recall@10 against brute force above a floor, and not
    lower with more partitions probed;
  - bad input (dtype, shape, strides, NaN, row ids outside the fragments,
    duplicates, bad k/nprobe/options, a missing index) raises a clear
    segforge.Error subclass carrying the library's code;
  - searches from 8 threads at once give the answers of one thread.
"""
import os
import shutil
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_python  # noqa: E402

api_python.setup()
import numpy as np  # noqa: E402

import segforge  # noqa: E402
import serve_helpers as h  # noqa: E402

check = h.check
root = os.path.join(h.TMP, "py_api_search")
shutil.rmtree(root, ignore_errors=True)
ds = os.path.join(root, "ds")
rng = np.random.default_rng(12)
RPF, FRAGS, DIM, NLIST = 500, 8, 16, 16


def ids_of(n):
    """Row ids of rows 0..n-1 laid out RPF to a fragment."""
    i = np.arange(n, dtype=np.uint64)
    return ((i // RPF) << np.uint64(32)) | (i % RPF)


def brute(x, ids, q, k):
    """numpy's exact k nearest: squared L2 in float64, ties to the smaller id."""
    d = ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    out_i = np.empty((len(q), k), dtype=np.uint64)
    out_d = np.empty((len(q), k))
    for j in range(len(q)):
        order = np.lexsort((ids, d[j]))[:k]
        out_i[j], out_d[j] = ids[order], d[j][order]
    return out_i, out_d


def stage(staging, x, ids, shards, chunks=3):
    """One shard per fragment range, its rows added shuffled in chunks."""
    for s, (lo, hi) in enumerate(shards):
        rows = np.nonzero(((ids >> np.uint64(32)) >= lo) & ((ids >> np.uint64(32)) <= hi))[0]
        rows = rng.permutation(rows)
        with segforge.ShardWriter(staging, "w%d" % s, "%d-%d" % (lo, hi)) as w:
            for part in np.array_split(rows, chunks):
                w.add(np.ascontiguousarray(x[part]), np.ascontiguousarray(ids[part]))
        check(os.path.getsize(w.path) == w.bytes and w.rows == len(rows),
              "shard w%d: %d rows, %d bytes on disk" % (s, w.rows, w.bytes))


def raises(cls, code, needle, fn, what):
    try:
        fn()
    except segforge.Error as e:
        ok = isinstance(e, cls) and e.code == code and needle in e.message
        check(ok, "%s raises %s (code %d) naming %r: %s" % (what, cls.__name__, code, needle, e))
        return e
    except Exception as e:
        check(False, "%s raises %s, not a segforge.Error: %r" % (what, cls.__name__, e))
        return e
    check(False, "%s raises %s (it did not raise)" % (what, cls.__name__))


# ---- IVF_FLAT equals brute force -----------------------------------------------------
n = RPF * FRAGS
x = rng.integers(-6, 7, size=(n, DIM)).astype(np.float32)
ids = ids_of(n)
q = rng.integers(-6, 7, size=(100, DIM)).astype(np.float32)
flat = segforge.staging_root(ds, "job-flat")
check(flat == os.path.join(ds, "_indices", "_staging", "job-flat"), "staging_root: " + flat)
segforge.train(x, index_type="IVF_FLAT", metric="L2", nlist=NLIST, out=flat)
stage(flat, x, ids, [(0, 1), (2, 3), (4, 5), (6, 7)])
v = segforge.finalize(ds, index="flat", column="v", staging_id="job-flat",
                      expected_fragments="0-%d" % (FRAGS - 1), target_segment_bytes="140K")
check(v == 1, "finalize commits catalog version 1 (got %d)" % v)
check(segforge.finalize(ds, index="flat", column="v", staging_id="job-flat") == v,
      "finalizing again returns the job's version")
with segforge.Index(ds, "flat") as ix:
    check((ix.algorithm, ix.metric, ix.dim, ix.nlist, ix.num_rows) ==
          ("IVF_FLAT", "L2", DIM, NLIST, n), "the index describes itself: %s %s dim %d nlist %d "
          "rows %d" % (ix.algorithm, ix.metric, ix.dim, ix.nlist, ix.num_rows))
    check(ix.num_segments == 2, "a 140K budget merges the 4 shards of ~65K into 2 segments (%d)" % ix.num_segments)
    K = 10
    got_i, got_d = ix.search(q, k=K, nprobe=NLIST)
    want_i, want_d = brute(x, ids, q, K)
    check(got_i.dtype == np.uint64 and got_d.dtype == np.float32 and got_i.shape == (100, K),
          "search returns uint64 ids and float32 distances of shape (nq, k)")
    check(np.array_equal(got_i, want_i), "IVF_FLAT at nprobe=nlist: the ids are numpy's brute "
          "force, ties to the smaller row id (%d of %d differ)" % ((got_i != want_i).sum(),
                                                                   got_i.size))
    check(np.array_equal(got_d.astype(np.float64), want_d), "... and so are the distances")
    ties = sum(len(set(r)) < K for r in want_d)
    check(ties > 50, "the data has ties for the rule to decide (%d of 100 queries)" % ties)
    all_i, all_d = ix.search(q[:1], k=n + 5)
    check(sorted(all_i[0, :n].tolist()) == sorted(ids.tolist()) and
          (all_i[0, n:] == segforge.NO_ROW_ID).all() and np.isinf(all_d[0, n:]).all(),
          "k beyond the rows: every row once, then NO_ROW_ID and inf")
    e_i, e_d = segforge.exact_search(x, q, K, base_ids=ids)
    check(np.array_equal(e_i, want_i), "segforge.exact_search agrees with numpy")
    check(segforge.recall(got_i, want_i) == 1.0, "segforge.recall of identical answers is 1")

    # ---- threads ---------------------------------------------------------------------
    q2 = rng.standard_normal((400, DIM)).astype(np.float32) * 4
    serial = [ix.search(q2[i::8].copy(), k=10, nprobe=4) for i in range(8)]
    results, errors = {}, []

    def searcher(i):
        try:
            for rep in range(20):
                got = ix.search(q2[i::8].copy(), k=10, nprobe=4)
                if not (np.array_equal(got[0], serial[i][0]) and
                        np.array_equal(got[1], serial[i][1])):
                    results[i] = "differs at repetition %d" % rep
                    return
            results[i] = "same"
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    check(not errors and list(results.values()) == ["same"] * 8,
          "8 threads searching one index at once get one thread's answers (%s %s)" %
          (results, errors))

    # ---- the GIL is released during a search -----------------------------------------
    # While one long search runs in a thread, the main thread must keep
    # running: its longest stall must be far shorter than the search (were
    # the GIL held, it would stall for the whole call).
    big = rng.integers(-6, 7, size=(12000, DIM)).astype(np.float32)
    span = {}

    def long_search():
        t0 = time.monotonic()
        ix.search(big, k=10, nprobe=NLIST)
        span["t"] = time.monotonic() - t0

    t = threading.Thread(target=long_search)
    last, stall = time.monotonic(), 0.0
    t.start()
    while t.is_alive():
        now = time.monotonic()
        stall, last = max(stall, now - last), now
    t.join()
    check(span["t"] > 0.2 and stall < span["t"] / 2, "a %.2f s search leaves the other threads "
          "running (longest stall %.3f s): the GIL is released" % (span["t"], stall))

# ---- the same job in steps: plan, build from two threads, commit ---------------------
steps = segforge.staging_root(ds, "job-steps")
os.makedirs(steps)
shutil.copy(os.path.join(flat, "quantizer"), steps)
stage(steps, x, ids, [(0, 1), (2, 3), (4, 5), (6, 7)])
with segforge.SegmentBuilder(ds, "steps", "v", "job-steps", target_segment_bytes="140K",
                             expected_fragments="0-7", index_type="IVF_FLAT") as b:
    segs = b.plan()
    check([(s.shards, s.fragments, s.rows, s.built) for s in segs] ==
          [(["w0", "w1"], "0-3", 2000, False), (["w2", "w3"], "4-7", 2000, False)],
          "plan: two segments of two shards in fragment order, unbuilt: %s" % (segs,))
    check(len(segs) == 2 and '"%s"' % segs[0].segment_id in b.plan_json(),
          "plan_json names the planned segments")
    errs = []

    def build(i):
        try:
            b.build(i)
        except segforge.Error as e:
            errs.append(str(e))

    ts = [threading.Thread(target=build, args=(i,)) for i in range(len(segs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    check(not errs and all(s.built for s in b.segments),
          "build(i) from two threads builds both segments %s" % errs)
    version, already = b.commit()
    check(version == v + 1 and not already, "commit: catalog version %d, new" % version)
with segforge.SegmentBuilder(ds, "steps", "v", "job-steps", target_segment_bytes="140K") as b:
    b.plan()
    check(b.commit() == (version, True), "committing the job again is a no-op: (version, True)")
with segforge.SegmentBuilder(ds, "steps", "v", "job-steps") as b:
    b.plan()
    raises(segforge.ConflictError, 12, "committed once", b.commit,
           "committing the job again under another plan (one segment per shard)")
with segforge.Index(ds, "steps") as ix:
    check(np.array_equal(ix.search(q, k=10)[0], want_i),
          "the index built in steps answers as the finalized one")

# ---- IVF_SQ and IVF_PQ: recall -------------------------------------------------------
centers = rng.standard_normal((40, 32)).astype(np.float32) * 3
cx = (centers[rng.integers(0, 40, n)] + rng.standard_normal((n, 32))).astype(np.float32)
cq = (centers[rng.integers(0, 40, 200)] + rng.standard_normal((200, 32))).astype(np.float32)
truth, _ = brute(cx, ids, cq, 10)
floors = {"IVF_SQ": 0.9, "IVF_PQ": 0.4}
for kind, extra in (("IVF_SQ", {}), ("IVF_PQ", {"pq_m": 8})):
    job = "job-" + kind.lower()
    st = segforge.staging_root(ds, job)
    segforge.train(cx, index_type=kind, metric="L2", nlist=NLIST, out=st, seed=3, **extra)
    stage(st, cx, ids, [(0, 2), (3, 5), (6, 7)], chunks=2)
    segforge.finalize(ds, index=kind.lower(), column="v", staging_id=job,
                      expected_fragments="0-7", index_type=kind)
    ix = segforge.Index(ds, kind.lower())
    r = {p: segforge.recall(ix.search(cq, k=10, nprobe=p)[0], truth) for p in (2, NLIST)}
    ix.close()
    check(ix.algorithm == kind, "%s: the index is %s" % (kind, ix.algorithm))
    check(r[NLIST] >= floors[kind], "%s: recall@10 at nprobe=%d is %.3f (floor %.2f)" %
          (kind, NLIST, r[NLIST], floors[kind]))
    check(r[NLIST] >= r[2], "%s: more partitions probed find no less (nprobe 2: %.3f)" %
          (kind, r[2]))


# ---- bad input -----------------------------------------------------------------------
INV, E = 1, segforge.InvalidError
bad = segforge.staging_root(ds, "job-bad")
shutil.copytree(flat, bad, ignore=shutil.ignore_patterns("*.sfshard"))
xs, ids2 = x[:RPF], ids[:RPF]  # fragment 0
w = segforge.ShardWriter(bad, "b0", "0-1")
raises(E, INV, "float32", lambda: w.add(xs.astype(np.float64), ids2), "float64 vectors")
raises(E, INV, "2-dimensional", lambda: w.add(xs[0], ids2[:1]), "a 1-d vector")
raises(E, INV, "dim 16", lambda: w.add(np.ascontiguousarray(xs[:, :15]), ids2), "15 columns")
raises(E, INV, "C-contiguous", lambda: w.add(xs[::2], ids2[::2].copy()), "row-strided vectors")
raises(E, INV, "C-contiguous", lambda: w.add(np.asfortranarray(xs), ids2),
       "column-major vectors")
raises(E, INV, "numpy array", lambda: w.add(xs.tolist(), ids2), "a list of vectors")
raises(E, INV, "uint64", lambda: w.add(xs, ids2.astype(np.int64)), "int64 row ids")
raises(E, INV, "shape (500,)", lambda: w.add(xs, ids2[:-1]), "one row id short")
raises(E, INV, "contiguous", lambda: w.add(xs[:250], ids[:500:2]), "strided row ids")
nan = xs.copy()
nan[3, 5] = np.nan
e = raises(E, INV, "3", lambda: w.add(nan, ids2), "a NaN in row 3 (checked by the library)")
print("     the library says: %s" % e)
inf = xs.copy()
inf[7, 0] = np.inf
raises(E, INV, "7", lambda: w.add(inf, ids2), "an infinity in row 7")
out = ids2.copy()
out[10] = segforge.row_id(5, 10)
e = raises(E, INV, str(segforge.row_id(5, 10)), lambda: w.add(xs, out),
           "a row id in fragment 5 of a shard declaring 0-1")
print("     the library says: %s" % e)
check(w.rows == 0, "refused calls added nothing (rows %d)" % w.rows)
w.add(xs, ids2)
w.add(xs[:1], ids2[:1])
raises(E, INV, str(int(ids2[0])), w.finish, "a duplicated row id, found at finish")
check(not os.path.exists(os.path.join(bad, "b0.sfshard")), "a refused finish writes no shard")
w.close()
raises(E, INV, "closed", lambda: w.add(xs, ids2), "add on a closed writer")
try:
    with segforge.ShardWriter(bad, "b1", "0") as w1:
        w1.add(xs, ids2)
        raise RuntimeError("the worker failed")
except RuntimeError:
    pass
check(not os.path.exists(os.path.join(bad, "b1.sfshard")),
      "a with-block that raises discards its shard")
with segforge.ShardWriter(bad, "b2", "0") as w2:
    w2.add(xs, ids2)
raises(segforge.ExistsError, 9, "b2", lambda: segforge.ShardWriter(bad, "b2", "0"),
       "a second writer of an existing shard id")
segforge.ShardWriter(bad, "b2", "0", exclusive=False).close()
raises(segforge.IncompleteError, 11, "1", lambda: segforge.finalize(
    ds, index="bad", column="v", staging_id="job-bad", expected_fragments="0-1"),
    "finalize of fragments 0-1 with only 0 staged")
raises(segforge.NotFoundError, 8, "quantizer", lambda: segforge.ShardWriter(
    segforge.staging_root(ds, "job-none"), "w0"), "a writer without a quantizer")

raises(E, INV, "HNSW", lambda: segforge.train(x, index_type="HNSW", nlist=4, out=bad),
       "train with an unknown index type")
raises(E, INV, "nlsit", lambda: segforge.train(x, nlist=4, nlsit=4, out=bad),
       "train with a misspelt option")
raises(E, INV, "float32", lambda: segforge.train(x.astype(np.float64), nlist=4, out=bad),
       "train on float64")
ix = segforge.Index(ds, "flat")
raises(E, INV, "float32", lambda: ix.search(q.astype(np.float64), k=5), "float64 queries")
raises(E, INV, "dim 16", lambda: ix.search(np.zeros((2, 8), np.float32), k=5),
       "queries of dim 8")
raises(E, INV, "C-contiguous", lambda: ix.search(q[::3], k=5), "strided queries")
raises(E, INV, "k must be in 1..", lambda: ix.search(q, k=0), "k=0")
raises(E, INV, "nprobe must be in 1..", lambda: ix.search(q, k=5, nprobe=-1), "nprobe=-1")
raises(E, INV, "k must be an integer", lambda: ix.search(q, k=2.5), "k=2.5")
ix.close()
raises(E, INV, "closed", lambda: ix.search(q, k=5), "search on a closed index")
raises(segforge.TimedOutError, 64, "nojob", lambda: segforge.wait_committed(ds, "nojob", 0.2),
       "waiting 0.2 s for a job nobody commits")
check(segforge.wait_committed(ds, "job-flat", timeout=0) == v,
      "wait_committed of a committed job returns its version at once")
raises(segforge.NotFoundError, 8, "nope", lambda: segforge.Index(ds, "nope"),
       "opening an index that does not exist")
raises(segforge.NotFoundError, 8, "none", lambda: segforge.Index(os.path.join(root, "none"), "flat"),
       "opening a dataset that does not exist")
h.finish()
