/* api_error.c - the version, status codes and errors of the public API. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"

/* The public codes are the internal ones: a binding may rely on either. */
#define SAME(pub, internal) \
  _Static_assert((int)(pub) == (int)(internal), #pub " must equal " #internal)
SAME(SF_STATUS_INVALID, SF_EINVAL);
SAME(SF_STATUS_IO, SF_EIO);
SAME(SF_STATUS_NOMEM, SF_ENOMEM);
SAME(SF_STATUS_CORRUPT, SF_ECORRUPT);
SAME(SF_STATUS_FORMAT, SF_EFORMAT);
SAME(SF_STATUS_CHECKSUM, SF_ECHECKSUM);
SAME(SF_STATUS_MISMATCH, SF_EMISMATCH);
SAME(SF_STATUS_NOT_FOUND, SF_ENOTFOUND);
SAME(SF_STATUS_EXISTS, SF_EEXIST);
SAME(SF_STATUS_OVERLAP, SF_EOVERLAP);
SAME(SF_STATUS_INCOMPLETE, SF_EINCOMPLETE);
SAME(SF_STATUS_CONFLICT, SF_ECONFLICT);
SAME(SF_STATUS_CANCELED, SF_ECANCELED);
SAME(SF_STATUS_DECODE, SF_EDECODE);
SAME(SF_STATUS_LIMIT, SF_ELIMIT);
_Static_assert((int)SF_STATUS_TIMEOUT >= (int)SF_ECODE_MAX, "TIMEOUT is the API's own");

#define STR2(x) #x
#define STR(x) STR2(x)

const char *sf_version(void) {
  return STR(SF_VERSION_MAJOR) "." STR(SF_VERSION_MINOR) "." STR(SF_VERSION_PATCH);
}

int sf_version_number(void) {
  return SF_VERSION_NUMBER;
}

const char *sf_status_name(int code) {
  if (code == SF_STATUS_OK) return "OK";
  if (code == SF_STATUS_TIMEOUT) return "TIMEOUT";
  if (code == SF_STATUS_NOT_FOUND) return "NOT_FOUND";
  if (code == SF_STATUS_EXISTS) return "EXISTS";
  if (code == SF_STATUS_INVALID) return "INVALID";
  if (code > 0 && code < SF_ECODE_MAX) return sf_code_name((sf_code)code);
  return "UNKNOWN";
}

void sf_free(void *p) {
  free(p);
}

static void copy_msg(sf_error *out, const char *msg) {
  size_t n = strlen(msg);
  if (n >= sizeof out->message) n = sizeof out->message - 1;
  memcpy(out->message, msg, n);
  out->message[n] = '\0';
}

/* The internal layers' messages name the program's flags, which a caller
 * of the library never sees: each is said in the words of the options
 * that do the same (sf_builder_new, sf_index_finalize). */
static const char *const flag_words[][2] = {
    {"pass --replace", "set option replace=1"},
    {"--replace", "option replace=1"},
    {"--expected-fragments", "option expected_fragments"},
};

/* msg with every flag of flag_words rewritten, into out (cut to fit). */
static void copy_api_words(sf_error *out, const char *msg) {
  size_t used = 0, cap = sizeof out->message - 1;
  while (*msg && used < cap) {
    size_t f = 0, nf = sizeof flag_words / sizeof *flag_words;
    while (f < nf && strncmp(msg, flag_words[f][0], strlen(flag_words[f][0]))) f++;
    const char *piece = f < nf ? flag_words[f][1] : msg;
    size_t len = f < nf ? strlen(piece) : 1;
    if (len > cap - used) len = cap - used;
    memcpy(out->message + used, piece, len);
    used += len;
    msg += f < nf ? strlen(flag_words[f][0]) : 1;
  }
  out->message[used] = '\0';
}

int sf_api_from_err(sf_error *out, const sf_err *e) {
  int code = e->code ? (int)e->code : SF_STATUS_INVALID;
  if (out) {
    out->code = code;
    if (e->msg[0])
      copy_api_words(out, e->msg);
    else
      copy_msg(out, sf_status_name(code));
  }
  return code;
}

int sf_api_fail(sf_error *out, int code, const char *fmt, ...) {
  if (!out) return code;
  out->code = code;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out->message, sizeof out->message, fmt, ap);
  va_end(ap);
  if (n < 0) copy_msg(out, sf_status_name(code));
  return code;
}

int sf_staging_root(const char *dataset, const char *staging_id, char **out,
                    sf_error *err) {
  sf_err e = {0};
  char *path = NULL, *staging = NULL;
  if (!out) return sf_api_fail(err, SF_STATUS_INVALID, "sf_staging_root: out is NULL");
  *out = NULL;
  if (!dataset || !*dataset)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the dataset is missing; give its directory or file:// URI");
  if (sf_catalog_check_id("staging id", staging_id, &e) ||
      sf_catalog_dataset_path(dataset, &path, &e))
    return sf_api_from_err(err, &e);
  staging = sf_fs_join(path, SF_CATALOG_STAGING_DIR);
  *out = staging ? sf_fs_join(staging, staging_id) : NULL;
  free(staging);
  free(path);
  return *out ? SF_STATUS_OK : sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
}
