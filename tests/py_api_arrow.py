#!/usr/bin/python3
"""ShardWriter.add_arrow: Arrow arrays through the PyCapsule interface
(__arrow_c_array__), built here by hand from the C Data Interface
specification since Debian 12 ships no pyarrow. The same rows added from
numpy and from Arrow (a struct array, two separate arrays, arrays sliced at
the struct and at the child level) must give byte-identical shard files;
nulls, wrong types and objects that are not Arrow arrays are refused naming
the column and the row, and a refused call adds nothing.
"""
import ctypes
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


# ---- the C Data Interface, by hand ------------------------------------------------------
class ArrowSchema(ctypes.Structure):
    pass


ArrowSchema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p),
                        ("metadata", ctypes.c_char_p), ("flags", ctypes.c_int64),
                        ("n_children", ctypes.c_int64),
                        ("children", ctypes.POINTER(ctypes.POINTER(ArrowSchema))),
                        ("dictionary", ctypes.POINTER(ArrowSchema)),
                        ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


class ArrowArray(ctypes.Structure):
    pass


ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64),
                       ("offset", ctypes.c_int64), ("n_buffers", ctypes.c_int64),
                       ("n_children", ctypes.c_int64),
                       ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                       ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
                       ("dictionary", ctypes.POINTER(ArrowArray)),
                       ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


# A release callback that does nothing: this test owns every buffer and keeps
# it alive; the library must not call it anyway (it borrows).
RELEASE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda p: None)
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class Arr:
    """An Arrow array (schema + array) whose memory this object holds."""

    def __init__(self, fmt, length, buffers, children=(), offset=0, null_count=0, name=b""):
        self.keep = [buffers, children, fmt, name]
        self.s = ArrowSchema(format=fmt, name=name, flags=2, n_children=len(children),
                             release=ctypes.cast(RELEASE, ctypes.c_void_p).value)
        self.a = ArrowArray(length=length, null_count=null_count, offset=offset,
                            n_buffers=len(buffers), n_children=len(children),
                            release=ctypes.cast(RELEASE, ctypes.c_void_p).value)
        bufs = (ctypes.c_void_p * max(len(buffers), 1))(
            *[None if b is None else b.ctypes.data for b in buffers])
        self.a.buffers = bufs
        self.keep.append(bufs)
        if children:
            sc = (ctypes.POINTER(ArrowSchema) * len(children))(
                *[ctypes.pointer(c.s) for c in children])
            ac = (ctypes.POINTER(ArrowArray) * len(children))(
                *[ctypes.pointer(c.a) for c in children])
            self.s.children, self.a.children = sc, ac
            self.keep += [sc, ac]

    def __arrow_c_array__(self, requested_schema=None):
        return (_new_capsule(ctypes.addressof(self.s), b"arrow_schema", None),
                _new_capsule(ctypes.addressof(self.a), b"arrow_array", None))


def bitmap(n, nulls=()):
    bits = np.full((n + 7) // 8, 0xFF, dtype=np.uint8)
    for i in nulls:
        bits[i >> 3] &= ~np.uint8(1 << (i & 7))
    return bits


def vec_array(x, offset=0, child_offset=0, validity=None, null_count=0, elem_fmt=b"f"):
    """FixedSizeList<float32>[dim] over x's rows; child_offset counts elements."""
    dim = x.shape[1]
    flat = x.reshape(-1)
    child = Arr(elem_fmt, len(flat) - child_offset, [None, flat], offset=child_offset)
    return Arr(b"+w:%d" % dim, x.shape[0] - offset - child_offset // dim, [validity, ],
               [child], offset=offset, null_count=null_count, name=b"v")


def id_array(ids, offset=0, validity=None, null_count=0, fmt=b"L"):
    return Arr(fmt, len(ids) - offset, [validity, ids], offset=offset, null_count=null_count,
               name=b"id")


def struct(vecs, ids, length, offset=0):
    vecs.s.name, ids.s.name = b"emb", b"row_id"
    return Arr(b"+s", length, [None], [vecs, ids], offset=offset)


# ---- the data -----------------------------------------------------------------------------
root = os.path.join(h.TMP, "py_api_arrow")
shutil.rmtree(root, ignore_errors=True)
st = segforge.staging_root(os.path.join(root, "ds"), "job")
rng = np.random.default_rng(3)
N, DIM = 600, 8
x = rng.standard_normal((N, DIM)).astype(np.float32)
ids = (np.uint64(1) << np.uint64(32)) | np.arange(N, dtype=np.uint64)  # fragment 1
segforge.train(x, index_type="IVF_SQ", nlist=8, out=st)


def shard_bytes(name, add):
    with segforge.ShardWriter(st, name, "1") as w:
        add(w)
    with open(w.path, "rb") as f:
        return f.read()


ref = shard_bytes("numpy", lambda w: w.add(x, ids))
lo, hi = 37, 537  # a slice: rows 37..536
ref_slice = shard_bytes("numpy_slice", lambda w: w.add(x[lo:hi].copy(), ids[lo:hi].copy()))

got = shard_bytes("struct", lambda w: w.add_arrow(struct(vec_array(x), id_array(ids), N)))
check(got == ref, "a struct array gives the numpy shard, byte for byte (%d bytes)" % len(ref))
got = shard_bytes("columns", lambda w: w.add_arrow(vec_array(x), id_array(ids)))
check(got == ref, "two separate arrays give the numpy shard, byte for byte")
got = shard_bytes("halves", lambda w: [w.add_arrow(vec_array(x[:300]), id_array(ids[:300])),
                                       w.add_arrow(vec_array(x[300:]), id_array(ids[300:]))])
check(got == ref, "two calls of half the rows each give the same shard")
got = shard_bytes("sliced_struct", lambda w: w.add_arrow(
    struct(vec_array(x), id_array(ids), hi - lo, offset=lo)))
check(got == ref_slice, "a struct sliced at offset %d reads rows %d..%d" % (lo, lo, hi - 1))
got = shard_bytes("sliced_children", lambda w: w.add_arrow(
    vec_array(x[:hi], offset=lo - 7, child_offset=7 * DIM), id_array(ids[:hi], offset=lo)))
check(got == ref_slice, "offsets at the list and at its float child add up (%d + %d rows)" %
      (lo - 7, 7))
got = shard_bytes("named", lambda w: w.add_arrow(struct(vec_array(x), id_array(ids), N),
                                                 vector_field="emb", rowid_field="row_id"))
check(got == ref, "vector_field and rowid_field pick the columns by name")
got = shard_bytes("valid_bitmaps", lambda w: w.add_arrow(
    vec_array(x, validity=bitmap(N), null_count=-1), id_array(ids, validity=bitmap(N))))
check(got == ref, "validity bitmaps with every bit set read as no nulls")


# ---- refusals -----------------------------------------------------------------------------
def refused(needles, fn, what):
    try:
        fn()
        check(False, "%s is refused" % what)
    except segforge.InvalidError as e:
        check(e.code == 1 and all(n in e.message for n in needles),
              "%s is refused naming %s: %s" % (what, needles, e))


w = segforge.ShardWriter(st, "bad", "1")
refused(["row 5"], lambda: w.add_arrow(vec_array(x, validity=bitmap(N, [5]), null_count=1),
                                       id_array(ids)), "a null vector in row 5")
refused(["row 9"], lambda: w.add_arrow(vec_array(x), id_array(ids, validity=bitmap(N, [9]),
                                                              null_count=1)),
        "a null row id in row 9")
refused(["g"], lambda: w.add_arrow(vec_array(x.astype(np.float64), elem_fmt=b"g"),
                                   id_array(ids)), "float64 vector elements")
refused(["l"], lambda: w.add_arrow(vec_array(x), id_array(ids.astype(np.int64), fmt=b"l")),
        "int64 row ids")
refused(["nope"], lambda: w.add_arrow(struct(vec_array(x), id_array(ids), N),
                                      vector_field="nope"), "a vector_field that is no column")
refused(["Arrow array", "ndarray"], lambda: w.add_arrow(x, ids), "numpy arrays to add_arrow")
refused(["name the columns"], lambda: w.add_arrow(vec_array(x), id_array(ids),
                                                  vector_field="v"),
        "field names with two arrays")
check(w.rows == 0, "the refused calls added nothing")
w.add_arrow(vec_array(x), id_array(ids))
check(w.rows == N, "the writer goes on after refusals (%d rows)" % w.rows)
w.close()
h.finish()
