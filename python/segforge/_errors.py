"""The exceptions: one class per status code of the C library
(SF_STATUS_* in segforge.h), all under segforge.Error."""


class Error(Exception):
    """A failed segforge call. code is the library's status code (stable
    across versions), status its name ("INVALID", ...), message the
    library's sentence naming what was wrong and how to fix it."""

    code = -1
    status = "UNKNOWN"

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self):
        return "%s (%s)" % (self.message, self.status)


class InvalidError(Error, ValueError):
    """A bad argument, option or input value (wrong dtype or shape, NaN, a
    row id outside the shard's fragments, an unknown option...)."""
    code, status = 1, "INVALID"


class IoError(Error):
    """An operating-system I/O call or a Kafka delivery failed."""
    code, status = 2, "IO"


class NoMemoryError(Error, MemoryError):
    code, status = 3, "NOMEM"


class CorruptError(Error):
    """A file's bytes break its format."""
    code, status = 4, "CORRUPT"


class FormatError(Error):
    """A file of another kind, or an unsupported version."""
    code, status = 5, "FORMAT"


class ChecksumError(Error):
    code, status = 6, "CHECKSUM"


class MismatchError(Error, ValueError):
    """Parameters differ (type, metric, dim, nlist)."""
    code, status = 7, "MISMATCH"


class NotFoundError(Error, LookupError):
    """A file, index, job or version does not exist."""
    code, status = 8, "NOT_FOUND"


class ExistsError(Error):
    code, status = 9, "EXISTS"


class OverlapError(Error):
    """Fragments present in two shards or segments."""
    code, status = 10, "OVERLAP"


class IncompleteError(Error):
    """The shards do not cover the expected fragments."""
    code, status = 11, "INCOMPLETE"


class ConflictError(Error):
    code, status = 12, "CONFLICT"


class CanceledError(Error):
    code, status = 13, "CANCELED"


class DecodeError(Error, ValueError):
    """An event field breaks its rule."""
    code, status = 14, "DECODE"


class LimitError(Error, ValueError):
    code, status = 15, "LIMIT"


class TimedOutError(Error):
    """A wait ran out of time (wait_committed)."""
    code, status = 64, "TIMEOUT"


_BY_CODE = {c.code: c for c in (InvalidError, IoError, NoMemoryError, CorruptError, FormatError,
                                ChecksumError, MismatchError, NotFoundError, ExistsError,
                                OverlapError, IncompleteError, ConflictError, CanceledError,
                                DecodeError, LimitError, TimedOutError)}


def from_status(code, message, status=None):
    cls = _BY_CODE.get(code, Error)
    return cls(message, code, status or cls.status)
