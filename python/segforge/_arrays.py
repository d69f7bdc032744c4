"""Checks of the numpy arrays handed to the library. Nothing is converted
silently: a float64 array or a strided view would cost a hidden copy (or
worse, be read as the wrong bytes), so it is refused naming the fix."""
import numpy as np

from ._errors import InvalidError

U32_MAX = 0xFFFFFFFF


def _name_type(a):
    return type(a).__name__ if not isinstance(a, np.ndarray) else "ndarray"


def vectors(a, what, dim=None):
    """a float32 (n, dim) C-contiguous array; returns it."""
    if not isinstance(a, np.ndarray):
        raise InvalidError("%s must be a numpy array of float32, shape (n, dim); got a %s "
                           "(use np.asarray(x, dtype=np.float32))" % (what, _name_type(a)))
    if a.dtype != np.float32:
        raise InvalidError("%s must have dtype float32, not %s (convert with "
                           "x.astype(np.float32))" % (what, a.dtype))
    if a.ndim != 2:
        raise InvalidError("%s must be 2-dimensional, shape (n, dim); got shape %s (one "
                           "vector is x.reshape(1, -1))" % (what, a.shape))
    if dim is not None and a.shape[1] != dim:
        raise InvalidError("%s has %d columns but the %s takes dim %d" %
                           (what, a.shape[1], "index" if what == "queries" else "quantizer", dim))
    if a.shape[1] == 0 or a.shape[1] > U32_MAX:
        raise InvalidError("%s has %d columns; dim must be 1..%d" % (what, a.shape[1], U32_MAX))
    if not a.flags.c_contiguous:
        raise InvalidError("%s must be C-contiguous (row-major, no strides); got a view with "
                           "strides %s (use np.ascontiguousarray(x))" % (what, a.strides))
    _aligned(a, what)
    return a


def _aligned(a, what):
    """C reads the array as float or uint64: its address must suit the type
    (np.frombuffer at an odd offset gives one that does not)."""
    if not a.flags.aligned:
        raise InvalidError("%s is not aligned to %d bytes (its data starts at address %#x, "
                           "e.g. np.frombuffer at an odd offset); pass an aligned copy, "
                           "x.copy()" % (what, a.dtype.alignment, a.ctypes.data))


def row_ids(a, n):
    """a uint64 (n,) contiguous array; returns it."""
    if not isinstance(a, np.ndarray):
        raise InvalidError("row_ids must be a numpy array of uint64, shape (n,); got a %s "
                           "(use np.asarray(ids, dtype=np.uint64))" % _name_type(a))
    if a.dtype != np.uint64:
        raise InvalidError("row_ids must have dtype uint64, not %s (a row id is "
                           "(fragment << 32) | offset; convert with ids.astype(np.uint64))" %
                           a.dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidError("row_ids must have shape (%d,), one per vector; got shape %s" %
                           (n, a.shape))
    if not a.flags.c_contiguous:
        raise InvalidError("row_ids must be contiguous; got a view with strides %s (use "
                           "np.ascontiguousarray(ids))" % (a.strides,))
    _aligned(a, "row_ids")
    return a


def count(v, what, lo=1, hi=U32_MAX):
    """An int in [lo, hi] (ctypes would wrap a negative one silently)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InvalidError("%s must be an integer, not %s" % (what, type(v).__name__))
    if not lo <= int(v) <= hi:
        raise InvalidError("%s must be in %d..%d, not %d" % (what, lo, hi, int(v)))
    return int(v)


def timeout_ms(seconds, what, lo):
    """A timeout in seconds (int or float) as whole milliseconds in
    [lo, 2**31 - 1], named in seconds when it is out of range."""
    hi = 2**31 - 1
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer,
                                                               np.floating)):
        raise InvalidError("%s must be a number of seconds, not %s" %
                           (what, type(seconds).__name__))
    s = float(seconds)
    if not (s == s and lo <= s * 1000 <= hi):  # s == s: not NaN
        raise InvalidError("%s is %r seconds; give %g to %g seconds" %
                           (what, seconds, lo / 1000, hi / 1000))
    return int(s * 1000)


def ptr(a):
    return a.ctypes.data
