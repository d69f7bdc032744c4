#!/usr/bin/python3
"""The Python package used wrongly on purpose, without a broker:

  - an array whose data is not aligned to its dtype (np.frombuffer at an odd
    offset: contiguous, float32, yet C cannot read it as float) is refused
    naming the fix, for vectors, row ids and queries;
  - timeouts are numbers of seconds: NaN, infinity, negative or a string
    raise InvalidError naming seconds (not a ValueError of int(), nor a
    message in milliseconds);
  - a segment index out of range names the range a size_t holds;
  - errors of the finalizer name options, not the program's flags;
  - a boolean where a number is meant (nlist=True) is refused naming the
    option, while boolean options take True and False.
"""
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

check = h.check
root = os.path.join(h.TMP, "py_api_hostile")
shutil.rmtree(root, ignore_errors=True)
ds = os.path.join(root, "ds")
rng = np.random.default_rng(3)
N, DIM = 256, 8
E, INV = segforge.InvalidError, 1


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


def unaligned(a):
    """A C-contiguous copy of a whose data starts one byte off its
    alignment."""
    raw = np.frombuffer(bytes(1) + a.tobytes(), dtype=a.dtype, offset=1).reshape(a.shape)
    assert raw.flags.c_contiguous and not raw.flags.aligned
    return raw


x = rng.standard_normal((N, DIM)).astype(np.float32)
ids = (np.arange(N, dtype=np.uint64) // 64 << np.uint64(32)) | (np.arange(N, dtype=np.uint64) % 64)
staging = segforge.staging_root(ds, "job-1")
segforge.train(x, nlist=4, out=staging)

with segforge.ShardWriter(staging, "w0", "0-3") as w:
    raises(E, INV, "not aligned", lambda: w.add(unaligned(x), ids), "unaligned vectors")
    raises(E, INV, "not aligned", lambda: w.add(x, unaligned(ids)), "unaligned row ids")
    check(w.rows == 0, "the refused calls added nothing")
    w.add(x, ids)
segforge.finalize(ds, index="idx", column="v", staging_id="job-1", expected_fragments="0-3")
with segforge.Index(ds, "idx") as ix:
    raises(E, INV, "not aligned", lambda: ix.search(unaligned(x[:4]), k=5), "unaligned queries")
    got, _ = ix.search(x[:4].copy(), k=1)
    check((got[:, 0] == ids[:4]).all(), "an aligned copy is searched: each row finds itself")
raises(E, INV, "not aligned", lambda: segforge.exact_search(unaligned(x), x[:2], k=1),
       "unaligned base of exact_search")

for bad in (float("nan"), float("inf"), -1, "5"):
    raises(E, INV, "seconds", lambda: segforge.wait_committed(ds, "nojob", timeout=bad),
           "wait_committed(timeout=%r)" % (bad,))
check(segforge.wait_committed(ds, "job-1", timeout=0.5) >= 1,
      "wait_committed with a float timeout of a committed job")

b = segforge.SegmentBuilder(ds, "idx", "v", "job-1")
b.plan()
raises(E, INV, "0..%d" % (2**63 - 1), lambda: b.build(2**63), "build(2**63)")
b.close()

for key in ("nlist", "seed"):
    kw = {"nlist": 4, key: True}
    raises(E, INV, key, lambda: segforge.train(x, out=os.path.join(root, "tb"), **kw),
           "train(%s=True)" % key)
check(not os.path.exists(os.path.join(root, "tb", "quantizer")), "nothing trained from nlist=True")

# A second job over the same fragments: finalize refuses it naming options.
staging2 = segforge.staging_root(ds, "job-2")
segforge.train(x, nlist=4, out=staging2)
with segforge.ShardWriter(staging2, "w0", "0-1") as w:
    w.add(x[:128], ids[:128])
e = raises(segforge.IncompleteError, 11, "option expected_fragments",
           lambda: segforge.finalize(ds, index="idx", column="v", staging_id="job-2",
                                     expected_fragments="0-3"), "job-2 short of fragments")
check(e is not None and "--" not in e.message, "the message names no command-line flag")
e = raises(segforge.OverlapError, 10, "option replace=1",
           lambda: segforge.finalize(ds, index="idx", column="v", staging_id="job-2"),
           "job-2 over committed fragments")
check(e is not None and "--" not in e.message, "the message names no command-line flag")
e = raises(segforge.OverlapError, 10, "option replace=1",
           lambda: segforge.finalize(ds, index="idx", column="v", staging_id="job-2",
                                     replace=False), "job-2 with replace=False")
h.finish()
