/* error.c - see error.h. */
#include "core/base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const names[SF_ECODE_MAX] = {
    [SF_OK] = "OK",
    [SF_EINVAL] = "INVALID",
    [SF_EIO] = "IO",
    [SF_ENOMEM] = "NOMEM",
    [SF_ECORRUPT] = "CORRUPT",
    [SF_EFORMAT] = "FORMAT",
    [SF_ECHECKSUM] = "CHECKSUM",
    [SF_EMISMATCH] = "MISMATCH",
    [SF_ENOTFOUND] = "NOTFOUND",
    [SF_EEXIST] = "EXISTS",
    [SF_EOVERLAP] = "OVERLAP",
    [SF_EINCOMPLETE] = "INCOMPLETE",
    [SF_ECONFLICT] = "CONFLICT",
    [SF_ECANCELED] = "CANCELED",
    [SF_EDECODE] = "DECODE",
    [SF_ELIMIT] = "LIMIT",
};

const char *sf_code_name(sf_code code) {
  if ((unsigned)code >= SF_ECODE_MAX || !names[code]) return "UNKNOWN";
  return names[code];
}

sf_code sf_err_set(sf_err *err, sf_code code, const char *fmt, ...) {
  if (!err) return code;
  va_list ap;
  va_start(ap, fmt);
  err->code = code;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

sf_code sf_err_errno(sf_err *err, sf_code code, int errnum, const char *fmt, ...) {
  if (!err) return code;
  va_list ap;
  va_start(ap, fmt);
  err->code = code;
  int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  /* strerror_r (GNU): strerror's buffer is shared by every thread. An errno
   * of 0 means a call failed without saying why; "Success" would mislead. */
  char buf[128];
  const char *why =
      errnum ? strerror_r(errnum, buf, sizeof buf) : "the system gave no error code";
  if (n >= 0 && (size_t)n < sizeof err->msg)
    snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", why);
  return code;
}

void sf_err_prefix(sf_err *err, const char *fmt, ...) {
  if (!err) return;
  char head[SF_ERR_MSG_MAX], old[SF_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* Built piecewise: the combined message is cut at SF_ERR_MSG_MAX. */
  size_t n = strnlen(head, sizeof head - 3);
  memcpy(err->msg, head, n);
  memcpy(err->msg + n, ": ", 3);
  size_t room = sizeof err->msg - n - 3;
  size_t m = strnlen(old, room);
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = '\0';
}

void sf_err_clear(sf_err *err) {
  if (!err) return;
  err->code = SF_OK;
  err->msg[0] = '\0';
}
