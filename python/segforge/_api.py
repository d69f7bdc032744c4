"""The Python face of include/segforge.h: functions and classes over the C
handles, numpy arrays in and out, exceptions instead of status codes."""
import collections
import ctypes
import os
import threading

import numpy as np

from . import _arrays, _arrow
from ._errors import InvalidError
from ._lib import check, lib, new_error, sf_delivery_report, take_string

Segment = collections.namedtuple("Segment", "segment_id bytes rows shards fragments built")
Segment.__doc__ = "One segment of a builder's plan."
DeliveryReport = collections.namedtuple("DeliveryReport", "partition offset event_id")
DeliveryReport.__doc__ = "Where a published ShardStaged went."


def _b(s, what):
    """A path, URI or name as bytes for a const char * argument."""
    if s is None:
        return None
    if isinstance(s, (str, bytes, os.PathLike)):
        return os.fsencode(s)
    raise InvalidError("%s must be a string or a path, not %s" % (what, type(s).__name__))


def _value(key, v):
    # "true"/"false", not "1"/"0": a boolean where a number is meant
    # (nlist=True) is then refused by the library instead of read as 1.
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):
        return v
    raise InvalidError("option %s must be a string, an integer or a boolean, not %s" %
                       (key, type(v).__name__))


class _Options:
    """An sf_options built from a dict (None values left out), freed on exit."""

    def __init__(self, values):
        self.values = {k: v for k, v in values.items() if v is not None}
        self.p = None

    def __enter__(self):
        self.p = lib.sf_options_new()
        if not self.p:
            raise MemoryError("sf_options_new: out of memory")
        try:
            for k, v in self.values.items():
                err = new_error()
                check(lib.sf_options_set(self.p, k.encode(), _value(k, v).encode(), err), err)
        except BaseException:
            lib.sf_options_free(self.p)
            raise
        return self.p

    def __exit__(self, *exc):
        lib.sf_options_free(self.p)
        self.p = None


class _Handle:
    """A C handle shared by threads: calls hold a use count so that close()
    waits for the calls running on the handle instead of freeing it under
    them (the C library requires that close never race with a call)."""

    def __init__(self, free, what):
        self._h = None
        self._free = free
        self._what = what
        self._uses = 0
        self._cv = threading.Condition()

    def _acquire(self):
        with self._cv:
            if not self._h:
                raise InvalidError("this %s is closed" % self._what)
            self._uses += 1
            return self._h

    def _release(self):
        with self._cv:
            self._uses -= 1
            if self._uses == 0:
                self._cv.notify_all()

    def _close_handle(self, *args):
        with self._cv:
            while self._uses:
                self._cv.wait()
            h, self._h = self._h, None
        if h:
            return self._free(h, *args)
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._h:
                self.close()
        except Exception:
            pass


# ---- versions and paths ------------------------------------------------------------
def version():
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return lib.sf_version().decode()


def staging_root(dataset, staging_id):
    """The staging root of a job: <dataset>/_indices/_staging/<staging_id>."""
    out, err = ctypes.c_void_p(), new_error()
    check(lib.sf_staging_root(_b(dataset, "dataset"), _b(staging_id, "staging_id"),
                              ctypes.byref(out), err), err)
    return take_string(out.value)


# ---- coordinator -------------------------------------------------------------------
def train(vectors, *, out, index_type="IVF_FLAT", metric="L2", nlist, **options):
    """Trains the quantizer of a job on vectors (float32, (n, dim)) and writes
    it to the staging root out (created when missing). Other options: pq_m
    (required for IVF_PQ), seed, max_train_rows, kmeans_iters, threads.
    Returns out. Releases the GIL while it trains."""
    x = _arrays.vectors(vectors, "vectors")
    opts = dict(options, index_type=index_type, metric=metric, nlist=nlist)
    err = new_error()
    with _Options(opts) as o:
        check(lib.sf_train(_arrays.ptr(x), x.shape[0], x.shape[1], o, _b(out, "out"), err), err)
    return out


# ---- worker ------------------------------------------------------------------------
class ShardWriter(_Handle):
    """Writes one shard, <staging>/<shard_id>.sfshard, from vectors and row
    ids in memory. As a context manager it finishes the shard when the block
    ends normally and discards it when the block raises. Once finished, rows,
    path, bytes and fragments describe the shard, after close() too.

    fragments: the fragments the shard declares ("0-3,7"); every row id added
    must lie in one of them. None: those of the rows added. exclusive=False
    replaces a shard of the same id (a retried worker)."""

    def __init__(self, staging, shard_id, fragments=None, *, exclusive=True):
        super().__init__(lambda h: lib.sf_shard_writer_free(h), "ShardWriter")
        h, err = ctypes.c_void_p(), new_error()
        with _Options({"exclusive": bool(exclusive)}) as o:
            check(lib.sf_shard_writer_open(_b(staging, "staging"), _b(shard_id, "shard_id"),
                                           _b(fragments, "fragments"), o, ctypes.byref(h), err),
                  err)
        self._h = h.value
        self._lock = threading.Lock()  # one call at a time, as the C writer wants
        self.dim = lib.sf_shard_writer_dim(self._h)
        self.finished = False
        self._done = None

    def add(self, vectors, row_ids):
        """Adds rows: vectors float32 (n, dim) C-contiguous, row_ids uint64
        (n,). A refused call (NaN, a row id outside the fragments) adds
        nothing; the writer may go on."""
        x = _arrays.vectors(vectors, "vectors", self.dim)
        ids = _arrays.row_ids(row_ids, x.shape[0])
        h = self._acquire()
        try:
            with self._lock:
                if self.finished:
                    raise InvalidError("this ShardWriter is finished; open a new one")
                err = new_error()
                check(lib.sf_shard_writer_add(h, _arrays.ptr(x), _arrays.ptr(ids), x.shape[0],
                                              x.shape[1], err), err)
        finally:
            self._release()

    def add_arrow(self, data, row_ids=None, *, vector_field=None, rowid_field=None):
        """Adds rows from Arrow, without a copy: data is a struct array (or a
        record batch) with a FixedSizeList<float32>[dim] vector column and a
        uint64 row id column (vector_field, rowid_field name them; None
        picks the only column of each type); or data is the vector array and
        row_ids the row id array. Any object with __arrow_c_array__ will do
        (pyarrow, polars, nanoarrow...). Sliced arrays are read from their
        offset; a null, or a column of another type, is refused naming the
        column and the row."""
        schema, array, keep = _arrow.export(data, "data" if row_ids is None else "vectors")
        if row_ids is not None:
            if vector_field is not None or rowid_field is not None:
                raise InvalidError("vector_field and rowid_field name the columns of one "
                                   "struct array; with two arrays, leave them out")
            ids_schema, ids_array, keep_ids = _arrow.export(row_ids, "row_ids")  # noqa: F841
        h = self._acquire()
        try:
            with self._lock:
                if self.finished:
                    raise InvalidError("this ShardWriter is finished; open a new one")
                err = new_error()
                if row_ids is None:
                    rc = lib.sf_shard_writer_add_arrow(h, schema, array,
                                                       _b(vector_field, "vector_field"),
                                                       _b(rowid_field, "rowid_field"), err)
                else:
                    rc = lib.sf_shard_writer_add_arrow_columns(h, schema, array, ids_schema,
                                                               ids_array, err)
                check(rc, err)
        finally:
            self._release()
        del keep  # the capsules lived through the call; now they may release

    def finish(self):
        """Sorts and writes the shard atomically; returns its path."""
        h = self._acquire()
        try:
            with self._lock:
                if not self.finished:
                    err = new_error()
                    check(lib.sf_shard_writer_finish(h, err), err)
                    self.finished = True
                    # kept past close(), for the publish that usually follows
                    self._done = (lib.sf_shard_writer_rows(h),
                                  lib.sf_shard_writer_path(h).decode(),
                                  lib.sf_shard_writer_bytes(h),
                                  take_string(lib.sf_shard_writer_fragments(h)))
                return self._done[1]
        finally:
            self._release()

    def close(self):
        """Frees the writer; an unfinished shard is discarded."""
        self._close_handle()

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None and self._h and not self.finished:
                self.finish()
        finally:
            self.close()

    def _get(self, fn, field):
        if self.finished:
            return self._done[field]
        h = self._acquire()
        try:
            with self._lock:
                return fn(h)
        finally:
            self._release()

    @property
    def rows(self):
        """Rows added so far."""
        return self._get(lib.sf_shard_writer_rows, 0)

    @property
    def path(self):
        """The shard file's path once finished, else None."""
        p = self._get(lib.sf_shard_writer_path, 1)
        return p.decode() if isinstance(p, bytes) else p

    @property
    def bytes(self):
        """The shard file's size once finished, else 0."""
        return self._get(lib.sf_shard_writer_bytes, 2)

    @property
    def fragments(self):
        """The fragments the shard covers, as a range list."""
        f = self._get(lib.sf_shard_writer_fragments, 3)
        return f if self.finished else take_string(f)


_EVENT_KEYS = ("dataset", "index", "column", "staging_id", "expected_fragments", "shard_id",
               "target_segment_bytes", "topic", "event_id")


def _kafka_config(config, kafka):
    """librdkafka properties: config's keys as they are, keyword arguments
    with '_' read as '.' (bootstrap_servers -> bootstrap.servers)."""
    props = dict(config or {})
    for k, v in kafka.items():
        props[k.replace("_", ".")] = v
    return [(k, _value(k, v)) for k, v in props.items() if v is not None]


class Producer(_Handle):
    """A Kafka producer of ShardStaged events, from librdkafka properties:
    Producer(bootstrap_servers="kafka1:9092", security_protocol="ssl"), or
    Producer({"bootstrap.servers": ...}). Thread-safe: any number of threads
    may publish at once; each call waits for its own acknowledgement."""

    def __init__(self, config=None, **kafka):
        super().__init__(lambda h, t: lib.sf_producer_free(h, t), "Producer")
        props = _kafka_config(config, kafka)
        n = len(props)
        keys = (ctypes.c_char_p * max(n, 1))(*[k.encode() for k, _ in props])
        values = (ctypes.c_char_p * max(n, 1))(*[v.encode() for _, v in props])
        h, err = ctypes.c_void_p(), new_error()
        check(lib.sf_producer_new(keys, values, n, ctypes.byref(h), err), err)
        self._h = h.value

    def publish(self, shard, *, dataset, index, column, staging_id, expected_fragments,
                timeout=30.0, **event):
        """Announces a finished shard (its path or its ShardWriter) with a
        ShardStaged event and waits up to timeout seconds for the broker's
        acknowledgement. Optional: shard_id, target_segment_bytes, topic,
        event_id. Returns a DeliveryReport; raises IoError when the event
        was not confirmed (publishing again is safe: same event id)."""
        for k in event:
            if k not in _EVENT_KEYS:
                raise InvalidError("publish() takes no option %r; the event options are %s" %
                                   (k, ", ".join(_EVENT_KEYS)))
        path = shard.path if isinstance(shard, ShardWriter) else shard
        if path is None:
            raise InvalidError("the ShardWriter is not finished; publish after finish()")
        opts = dict(event, dataset=os.fspath(dataset), index=index, column=column,
                    staging_id=staging_id, expected_fragments=expected_fragments)
        ms = _arrays.timeout_ms(timeout, "timeout", 1)
        report, err = sf_delivery_report(), new_error()
        h = self._acquire()
        try:
            with _Options(opts) as o:
                check(lib.sf_producer_publish_shard(h, _b(path, "shard"), o, ms,
                                                    ctypes.byref(report), err), err)
        finally:
            self._release()
        return DeliveryReport(report.partition, report.offset, report.event_id.decode())

    def close(self, timeout=10.0):
        """Waits up to timeout seconds for events in flight, then frees the
        producer; returns how many were not confirmed."""
        n = self._close_handle(_arrays.timeout_ms(timeout, "timeout", 0))
        return n or 0


def publish(shard, *, dataset, index, column, staging_id, expected_fragments, timeout=30.0,
            shard_id=None, target_segment_bytes=None, topic=None, event_id=None, config=None,
            **kafka):
    """Producer(config, **kafka).publish(shard, ...) for one shard: every
    keyword argument that is not an event option is a librdkafka property,
    '_' read as '.' (bootstrap_servers="h:9092")."""
    with Producer(config, **kafka) as p:
        return p.publish(shard, dataset=dataset, index=index, column=column,
                         staging_id=staging_id, expected_fragments=expected_fragments,
                         timeout=timeout, shard_id=shard_id,
                         target_segment_bytes=target_segment_bytes, topic=topic,
                         event_id=event_id)


# ---- finalizer ---------------------------------------------------------------------
def finalize(dataset, *, index, column, staging_id, **options):
    """Plans, builds and commits job staging_id as index `index`; returns the
    catalog version that holds it. Options: expected_fragments,
    index_type, target_segment_bytes, max_concurrency, replace. A job
    committed before returns its version. Releases the GIL throughout."""
    v, err = ctypes.c_uint64(), new_error()
    with _Options(options) as o:
        check(lib.sf_index_finalize(_b(dataset, "dataset"), _b(index, "index"),
                                    _b(column, "column"), _b(staging_id, "staging_id"), o,
                                    ctypes.byref(v), err), err)
    return v.value


def wait_committed(dataset, staging_id, timeout=None):
    """Waits until job staging_id is committed (by `segforge serve` or
    anyone); returns its catalog version. timeout in seconds, None: for
    ever; raises TimedOutError when it runs out."""
    ms = -1 if timeout is None else _arrays.timeout_ms(timeout, "timeout (None waits for "
                                                       "ever)", 0)
    v, err = ctypes.c_uint64(), new_error()
    check(lib.sf_index_wait_committed(_b(dataset, "dataset"), _b(staging_id, "staging_id"), ms,
                                      ctypes.byref(v), err), err)
    return v.value


class SegmentBuilder(_Handle):
    """The segment builder of one job: plan(), inspect the segments, build
    one (build(i), from any number of threads for different i) or all
    (build_all(), bounded by max_concurrency), then commit(). Options:
    index_type, target_segment_bytes, max_concurrency, expected_fragments,
    replace."""

    def __init__(self, dataset, index, column, staging_id, **options):
        super().__init__(lambda h: lib.sf_builder_free(h), "SegmentBuilder")
        h, err = ctypes.c_void_p(), new_error()
        with _Options(options) as o:
            check(lib.sf_builder_new(_b(dataset, "dataset"), _b(index, "index"),
                                     _b(column, "column"), _b(staging_id, "staging_id"), o,
                                     ctypes.byref(h), err), err)
        self._h = h.value
        # build(i) runs beside other build(j); every other call runs alone
        self._rw = threading.Condition()
        self._builds = 0
        self._alone = False

    def _call(self, fn, *args, exclusive=True):
        h = self._acquire()
        try:
            with self._rw:
                while self._alone or (exclusive and self._builds):
                    self._rw.wait()
                if exclusive:
                    self._alone = True
                else:
                    self._builds += 1
            try:
                return fn(h, *args)
            finally:
                with self._rw:
                    if exclusive:
                        self._alone = False
                    else:
                        self._builds -= 1
                    self._rw.notify_all()
        finally:
            self._release()

    def plan(self):
        """Reads and validates the staging root and plans it; returns the
        segments."""
        err = new_error()
        check(self._call(lib.sf_builder_plan, err), err)
        return self.segments

    @property
    def segments(self):
        def read(h):
            out = []
            for i in range(lib.sf_builder_num_segments(h)):
                shards = [lib.sf_builder_segment_shard(h, i, j).decode()
                          for j in range(lib.sf_builder_segment_num_shards(h, i))]
                out.append(Segment(lib.sf_builder_segment_id(h, i).decode(),
                                   lib.sf_builder_segment_bytes(h, i),
                                   lib.sf_builder_segment_rows(h, i), shards,
                                   take_string(lib.sf_builder_segment_fragments(h, i)),
                                   bool(lib.sf_builder_segment_built(h, i))))
            return out
        return self._call(read)

    def plan_json(self):
        return take_string(self._call(lib.sf_builder_plan_json))

    def build(self, i):
        """Builds segment i (or reuses a valid file); thread-safe for
        different i."""
        i = _arrays.count(i, "segment index", 0, 2**63 - 1)
        err = new_error()
        check(self._call(lib.sf_builder_build, i, err, exclusive=False), err)

    def build_all(self):
        err = new_error()
        check(self._call(lib.sf_builder_build_all, err), err)

    def commit(self):
        """Commits the planned segments; returns (version, already) where
        already is True when the job was committed before."""
        v, already, err = ctypes.c_uint64(), ctypes.c_int(), new_error()
        check(self._call(lib.sf_builder_commit, ctypes.byref(v), ctypes.byref(already), err),
              err)
        return v.value, bool(already.value)

    def close(self):
        self._close_handle()


# ---- searcher ----------------------------------------------------------------------
class Index(_Handle):
    """A committed index opened for search (the newest catalog version; open
    again to see a later commit). search() may be called from any number of
    threads at once; it releases the GIL."""

    def __init__(self, dataset, name):
        super().__init__(lambda h: lib.sf_index_close(h), "Index")
        h, err = ctypes.c_void_p(), new_error()
        check(lib.sf_index_open(_b(dataset, "dataset"), _b(name, "index name"), ctypes.byref(h),
                                err), err)
        self._h = h.value
        self.dim = lib.sf_index_dim(self._h)
        self.nlist = lib.sf_index_nlist(self._h)
        self.num_rows = lib.sf_index_num_rows(self._h)
        self.num_segments = lib.sf_index_num_segments(self._h)
        self.version = lib.sf_index_version(self._h)
        self.algorithm = lib.sf_index_algorithm(self._h).decode()
        self.metric = lib.sf_index_metric(self._h).decode()

    def search(self, queries, k=10, nprobe=None):
        """The k nearest rows of each query (float32, (nq, dim)) among the
        nprobe nearest partitions (None: all of them, exact for IVF_FLAT).
        Returns (ids uint64 (nq, k), distances float32 (nq, k)), best first;
        slots no row fills hold NO_ROW_ID and inf."""
        q = _arrays.vectors(queries, "queries", self.dim)
        k = _arrays.count(k, "k")
        nprobe = self.nlist if nprobe is None else _arrays.count(nprobe, "nprobe")
        nq = q.shape[0]
        ids = np.empty((nq, k), dtype=np.uint64)
        dists = np.empty((nq, k), dtype=np.float32)
        err = new_error()
        h = self._acquire()
        try:
            rc = lib.sf_index_search(h, _arrays.ptr(q), nq, self.dim, k, nprobe,
                                     _arrays.ptr(ids), _arrays.ptr(dists), err)
        finally:
            self._release()
        check(rc, err)
        return ids, dists

    def close(self):
        """Closes the index after the searches running on it end."""
        self._close_handle()


# ---- recall ------------------------------------------------------------------------
def exact_search(base, queries, k=10, metric="L2", base_ids=None):
    """Exact k nearest rows of each query among base (brute force, float32
    arrays of one dim), with the distances and tie rule of Index.search.
    base_ids: uint64 (n,) row ids of the base rows (None: positions)."""
    b = _arrays.vectors(base, "base")
    q = _arrays.vectors(queries, "queries", b.shape[1])
    ids_in = None if base_ids is None else _arrays.row_ids(base_ids, b.shape[0])
    k = _arrays.count(k, "k")
    ids = np.empty((q.shape[0], k), dtype=np.uint64)
    dists = np.empty((q.shape[0], k), dtype=np.float32)
    err = new_error()
    check(lib.sf_exact_search(_arrays.ptr(b), None if ids_in is None else _arrays.ptr(ids_in),
                              b.shape[0], _arrays.ptr(q), q.shape[0], b.shape[1],
                              _b(metric, "metric"), k, _arrays.ptr(ids), _arrays.ptr(dists),
                              err), err)
    return ids, dists


def recall(found, truth, k=None):
    """Recall@k of found ids (uint64 (nq, k_found)) against the true ones
    (uint64 (nq, k_truth)); k defaults to found's width."""
    for a, what in ((found, "found"), (truth, "truth")):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 2 \
                or not a.flags.c_contiguous:
            raise InvalidError("%s must be a C-contiguous uint64 array of shape (nq, k)" % what)
    if found.shape[0] != truth.shape[0]:
        raise InvalidError("found has %d queries, truth %d" % (found.shape[0], truth.shape[0]))
    k = found.shape[1] if k is None else _arrays.count(k, "k")
    r = lib.sf_recall(_arrays.ptr(found), found.shape[1], _arrays.ptr(truth), truth.shape[1],
                      found.shape[0], k)
    if r < 0:
        raise InvalidError("recall: k (%d) must be at most the width of found (%d) and of "
                           "truth (%d)" % (k, found.shape[1], truth.shape[1]))
    return r
