"""Arrow input without pyarrow: the Arrow PyCapsule interface.

Any Arrow array object of any library (pyarrow 14+, polars, nanoarrow,
DuckDB, arro3...) hands out its C Data Interface structs through
`__arrow_c_array__()`, as two PyCapsules named "arrow_schema" and
"arrow_array" (https://arrow.apache.org/docs/format/CDataInterface/PyCapsuleInterface.html).
The pointers inside go to sf_shard_writer_add_arrow*, which only borrows
them; the capsules are kept alive for the call and release the structs when
they are collected, as the interface says."""
import ctypes

from ._errors import InvalidError

_get = ctypes.pythonapi.PyCapsule_GetPointer
_get.restype, _get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_valid = ctypes.pythonapi.PyCapsule_IsValid
_valid.restype, _valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]


def export(obj, what):
    """(schema pointer, array pointer, capsules to keep alive) of an object
    with __arrow_c_array__."""
    fn = getattr(type(obj), "__arrow_c_array__", None)
    if fn is None:
        raise InvalidError("%s must be an Arrow array (an object with __arrow_c_array__, as "
                           "pyarrow, polars or nanoarrow arrays have); got a %s" %
                           (what, type(obj).__name__))
    caps = fn(obj)
    if not isinstance(caps, tuple) or len(caps) != 2 or \
            not _valid(caps[0], b"arrow_schema") or not _valid(caps[1], b"arrow_array"):
        raise InvalidError("%s.__arrow_c_array__() did not return the capsules "
                           "(arrow_schema, arrow_array)" % what)
    return _get(caps[0], b"arrow_schema"), _get(caps[1], b"arrow_array"), caps
