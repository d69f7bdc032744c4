"""segforge: distributed IVF vector-index builds, from Python.

A thin layer over libsegforge (include/segforge.h) through ctypes: numpy
arrays in and out, the GIL released during every library call, and
exceptions (segforge.Error and its subclasses) carrying the library's message
and status code. docs/python.md tells the whole story.

    import numpy as np, segforge
    segforge.train(x, index_type="IVF_FLAT", metric="L2", nlist=16, out=staging)
    with segforge.ShardWriter(staging, shard_id="w0") as w:
        w.add(vectors, row_ids)            # float32 (n, dim), uint64 (n,)
    segforge.finalize(dataset, index="idx", column="v", staging_id="job-1",
                      expected_fragments="0-3")
    ids, dists = segforge.Index(dataset, "idx").search(queries, k=10, nprobe=16)
"""
from ._errors import (CanceledError, ChecksumError, ConflictError, CorruptError, DecodeError,
                      Error, ExistsError, FormatError, IncompleteError, InvalidError, IoError,
                      LimitError, MismatchError, NoMemoryError, NotFoundError, OverlapError,
                      TimedOutError)
from ._api import (DeliveryReport, Index, Producer, Segment, SegmentBuilder, ShardWriter,
                   exact_search, finalize, publish, recall, staging_root, train, version,
                   wait_committed)
from ._lib import path as library_path

NO_ROW_ID = 0xFFFFFFFFFFFFFFFF


def row_id(fragment, offset):
    """The row id of a row: (fragment << 32) | offset, as in Lance."""
    return (int(fragment) << 32) | int(offset)


__version__ = version()
__all__ = [
    "CanceledError", "ChecksumError", "ConflictError", "CorruptError", "DecodeError", "Error",
    "ExistsError", "FormatError", "IncompleteError", "InvalidError", "IoError", "LimitError",
    "MismatchError", "NoMemoryError", "NotFoundError", "OverlapError", "TimedOutError",
    "DeliveryReport", "Index", "Producer", "Segment", "SegmentBuilder", "ShardWriter",
    "exact_search", "finalize", "publish", "recall", "staging_root", "train", "version",
    "wait_committed", "NO_ROW_ID", "row_id", "library_path",
]
