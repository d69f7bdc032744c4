/*
 * error.h - status codes and the error object shared by every segforge module.
 *
 * Convention (after librdkafka's errstr and zstd's single return value):
 * a function that can fail returns an sf_code (SF_OK == 0) and, when it fails,
 * fills the caller's sf_err with the same code and one sentence a person can
 * act on: what was wrong, naming the file/field/flag, and how to fix it.
 * Libraries never print and never exit; only the command-line program does.
 * The sf_err pointer may be NULL when the caller only wants the code.
 */
#ifndef SF_ERROR_H
#define SF_ERROR_H

#include <stddef.h>

typedef enum sf_code {
  SF_OK = 0,
  SF_EINVAL,      /* a bad argument, flag or configuration value */
  SF_EIO,         /* an operating-system I/O call failed */
  SF_ENOMEM,      /* an allocation failed */
  SF_ECORRUPT,    /* a file's bytes break its format (bad length, count, CRC) */
  SF_EFORMAT,     /* a file of another kind or of an unsupported version */
  SF_ECHECKSUM,   /* a quantizer checksum does not match the expected one */
  SF_EMISMATCH,   /* parameters differ (type, metric, dim, nlist, quantizer) */
  SF_ENOTFOUND,   /* a file, index or version does not exist */
  SF_EEXIST,      /* a name that must be new already exists */
  SF_EOVERLAP,    /* fragments present in two shards or segments */
  SF_EINCOMPLETE, /* shards do not cover the expected fragments */
  SF_ECONFLICT,   /* a concurrent writer won a race that cannot be retried */
  SF_ECANCELED,   /* work stopped because another part failed */
  SF_EDECODE,     /* an event could not be decoded */
  SF_ELIMIT,      /* a size or count beyond a sane limit */
  SF_ECODE_MAX
} sf_code;

#define SF_ERR_MSG_MAX 512

typedef struct sf_err {
  sf_code code;
  char msg[SF_ERR_MSG_MAX];
} sf_err;

/* Sets err (if not NULL) to code and a printf-style message; returns code so
 * that callers can write `return sf_err_set(err, SF_EIO, "...")`. */
sf_code sf_err_set(sf_err *err, sf_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like sf_err_set, then appends ": <strerror(errnum)>" (thread-safe). Every
 * failed system call is reported through it, so that each I/O error names
 * the system's reason ("No space left on device"); callers pass the errno
 * they saved right after the call, before anything could overwrite it. */
sf_code sf_err_errno(sf_err *err, sf_code code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes the current message with "<prefix>: " (used to add context such as
 * a file name while an error travels up); does nothing when err is NULL.
 * It returns nothing on purpose: with a NULL err it could only return SF_OK,
 * and `return sf_err_prefix(...)` then turned failures into success. Callers
 * return the code they already hold. */
void sf_err_prefix(sf_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Resets err to SF_OK with an empty message. */
void sf_err_clear(sf_err *err);

/* A stable upper-case name for a code ("CORRUPT", "IO", ...). */
const char *sf_code_name(sf_code code);

#endif
