"""Loading libsegforge.so and declaring its functions for ctypes.

The package calls the C library through ctypes (Python's standard library),
not through a compiled extension: there is nothing to build, one package works
with any Python 3 that Debian ships, and ctypes releases the GIL around every
foreign call, so a long train, finalize or search lets other Python threads
run (and several threads can search one Index at once, as the C library
allows). The price is that each call's argument types are declared here, by
hand, from include/segforge.h; tests/py_api_*.py exercise every one.

Where the library comes from, first found wins:
  1. SEGFORGE_LIBRARY, a path (to run from a build tree);
  2. the path `cmake --install` recorded in _libpath.py next to this file;
  3. the SONAME, libsegforge.so.<major>, through the dynamic loader's search.
"""
import ctypes
import os

from . import _errors

SONAME = "libsegforge.so.1"
MAJOR = 1

c_char_p, c_void_p, c_int, c_size_t = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
c_u32, c_u64, c_i32, c_i64 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32, ctypes.c_int64
c_double = ctypes.c_double
P = ctypes.POINTER


class sf_error(ctypes.Structure):
    _fields_ = [("code", c_int), ("message", ctypes.c_char * 512)]


class sf_delivery_report(ctypes.Structure):
    _fields_ = [("partition", c_i32), ("offset", c_i64), ("event_id", ctypes.c_char * 256)]


# name: (restype, argtypes). Handles travel as void pointers.
_PROTOTYPES = {
    "sf_version": (c_char_p, []),
    "sf_version_number": (c_int, []),
    "sf_status_name": (c_char_p, [c_int]),
    "sf_free": (None, [c_void_p]),
    "sf_options_new": (c_void_p, []),
    "sf_options_free": (None, [c_void_p]),
    "sf_options_set": (c_int, [c_void_p, c_char_p, c_char_p, P(sf_error)]),
    "sf_staging_root": (c_int, [c_char_p, c_char_p, P(c_void_p), P(sf_error)]),
    "sf_train": (c_int, [c_void_p, c_u64, c_u32, c_void_p, c_char_p, P(sf_error)]),
    "sf_shard_writer_open": (c_int, [c_char_p, c_char_p, c_char_p, c_void_p, P(c_void_p),
                                     P(sf_error)]),
    "sf_shard_writer_add": (c_int, [c_void_p, c_void_p, c_void_p, c_u64, c_u32, P(sf_error)]),
    "sf_shard_writer_add_arrow": (c_int, [c_void_p, c_void_p, c_void_p, c_char_p, c_char_p,
                                          P(sf_error)]),
    "sf_shard_writer_add_arrow_columns": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p,
                                                  c_void_p, P(sf_error)]),
    "sf_shard_writer_finish": (c_int, [c_void_p, P(sf_error)]),
    "sf_shard_writer_free": (None, [c_void_p]),
    "sf_shard_writer_rows": (c_u64, [c_void_p]),
    "sf_shard_writer_dim": (c_u32, [c_void_p]),
    "sf_shard_writer_path": (c_char_p, [c_void_p]),
    "sf_shard_writer_bytes": (c_u64, [c_void_p]),
    "sf_shard_writer_fragments": (c_void_p, [c_void_p]),
    "sf_producer_new": (c_int, [P(c_char_p), P(c_char_p), c_size_t, P(c_void_p), P(sf_error)]),
    "sf_producer_free": (c_int, [c_void_p, c_int]),
    "sf_producer_publish_shard": (c_int, [c_void_p, c_char_p, c_void_p, c_int,
                                          P(sf_delivery_report), P(sf_error)]),
    "sf_builder_new": (c_int, [c_char_p, c_char_p, c_char_p, c_char_p, c_void_p, P(c_void_p),
                               P(sf_error)]),
    "sf_builder_free": (None, [c_void_p]),
    "sf_builder_plan": (c_int, [c_void_p, P(sf_error)]),
    "sf_builder_num_segments": (c_size_t, [c_void_p]),
    "sf_builder_segment_id": (c_char_p, [c_void_p, c_size_t]),
    "sf_builder_segment_bytes": (c_u64, [c_void_p, c_size_t]),
    "sf_builder_segment_rows": (c_u64, [c_void_p, c_size_t]),
    "sf_builder_segment_num_shards": (c_size_t, [c_void_p, c_size_t]),
    "sf_builder_segment_shard": (c_char_p, [c_void_p, c_size_t, c_size_t]),
    "sf_builder_segment_fragments": (c_void_p, [c_void_p, c_size_t]),
    "sf_builder_segment_built": (c_int, [c_void_p, c_size_t]),
    "sf_builder_plan_json": (c_void_p, [c_void_p]),
    "sf_builder_build": (c_int, [c_void_p, c_size_t, P(sf_error)]),
    "sf_builder_build_all": (c_int, [c_void_p, P(sf_error)]),
    "sf_builder_commit": (c_int, [c_void_p, P(c_u64), P(c_int), P(sf_error)]),
    "sf_index_finalize": (c_int, [c_char_p, c_char_p, c_char_p, c_char_p, c_void_p, P(c_u64),
                                  P(sf_error)]),
    "sf_index_wait_committed": (c_int, [c_char_p, c_char_p, c_int, P(c_u64), P(sf_error)]),
    "sf_index_open": (c_int, [c_char_p, c_char_p, P(c_void_p), P(sf_error)]),
    "sf_index_close": (None, [c_void_p]),
    "sf_index_dim": (c_u32, [c_void_p]),
    "sf_index_nlist": (c_u32, [c_void_p]),
    "sf_index_num_rows": (c_u64, [c_void_p]),
    "sf_index_num_segments": (c_size_t, [c_void_p]),
    "sf_index_version": (c_u64, [c_void_p]),
    "sf_index_algorithm": (c_char_p, [c_void_p]),
    "sf_index_metric": (c_char_p, [c_void_p]),
    "sf_index_search": (c_int, [c_void_p, c_void_p, c_u64, c_u32, c_u32, c_u32, c_void_p,
                                c_void_p, P(sf_error)]),
    "sf_exact_search": (c_int, [c_void_p, c_void_p, c_u64, c_void_p, c_u64, c_u32, c_char_p,
                                c_u32, c_void_p, c_void_p, P(sf_error)]),
    "sf_recall": (c_double, [c_void_p, c_u32, c_void_p, c_u32, c_u64, c_u32]),
}


def _candidates():
    env = os.environ.get("SEGFORGE_LIBRARY")
    if env:
        return [("SEGFORGE_LIBRARY", env)]
    out = []
    try:
        from ._libpath import LIBRARY  # written by cmake --install
        out.append(("the path recorded at install", LIBRARY))
    except ImportError:
        pass
    out.append(("the SONAME", SONAME))
    return out


def _load():
    tried = []
    for how, path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s): %s" % (path, how, e))
            continue
        for name, (res, args) in _PROTOTYPES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise ImportError("%s exports no %s: it is not libsegforge %d.x; set "
                                  "SEGFORGE_LIBRARY to the right library" % (path, name, MAJOR))
            fn.restype, fn.argtypes = res, args
        number = lib.sf_version_number()
        if number // 10000 != MAJOR:
            raise ImportError("%s is libsegforge %s; this package needs major version %d" %
                              (path, lib.sf_version().decode(), MAJOR))
        return lib, path
    raise ImportError("libsegforge could not be loaded; tried " + "; ".join(tried) +
                      ". Install it (cmake --install) or set SEGFORGE_LIBRARY to "
                      "the path of libsegforge.so." + str(MAJOR))


lib, path = _load()


def new_error():
    return sf_error()


def check(rc, err):
    """Raises the Error subclass of a failed call's status."""
    if rc != 0:
        raise _errors.from_status(rc, err.message.decode(errors="replace"),
                                  lib.sf_status_name(rc).decode())


def take_string(ptr):
    """A char * the library allocated, as str; freed with sf_free."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        lib.sf_free(ptr)
