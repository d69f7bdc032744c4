/*
 * api_internal.h - what the files of the public API (the .c files of api/) share: the
 * hand-over of internal errors to the caller's sf_error, and the reading
 * of sf_options values. Nothing here is exported: every function of the
 * library that a program may call is declared in include/segforge.h.
 */
#ifndef SF_API_INTERNAL_H
#define SF_API_INTERNAL_H

#include <roaring/roaring.h>
#include <stdint.h>

#include "core/base/error.h"
#include "include/segforge.h"

/* The public status codes are the internal ones, value for value (checked
 * at compile time in api/common.c); SF_STATUS_TIMEOUT is the API's own. */

/* Copies an internal error into the caller's sf_error (may be NULL) and
 * returns its code. */
int sf_api_from_err(sf_error *out, const sf_err *e);

/* Sets out (may be NULL) to code and a printf-style message; returns code. */
int sf_api_fail(sf_error *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every key of o (may be NULL) must be one of the NULL-terminated list
 * `keys`, which `fn` (the public function's name) reads: SF_STATUS_INVALID
 * naming the key and listing those accepted otherwise. */
int sf_api_opts_check(const sf_options *o, const char *fn, const char *const *keys,
                      sf_error *err);

/* Typed readers of one option; each leaves *out = def when the key is not
 * set (or o is NULL) and refuses a value it cannot read with
 * SF_STATUS_INVALID naming the key, the value and what is accepted. */
int sf_api_opt_u64(const sf_options *o, const char *key, uint64_t def, uint64_t min,
                   uint64_t max, uint64_t *out, sf_error *err);
/* A size: a count of bytes or one with a binary suffix K, M, G, T. */
int sf_api_opt_size(const sf_options *o, const char *key, uint64_t def, uint64_t *out,
                    sf_error *err);
int sf_api_opt_bool(const sf_options *o, const char *key, int def, int *out,
                    sf_error *err);
/* The value itself (owned by o), or def. */
const char *sf_api_opt_str(const sf_options *o, const char *key, const char *def);
/* A range list of fragments ("0-3,7") into a new bitmap (sf_fragset_free),
 * or NULL when the key is not set. */
int sf_api_opt_fragments(const sf_options *o, const char *key, roaring_bitmap_t **out,
                         sf_error *err);

#endif
