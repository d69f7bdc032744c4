/*
 * logline.h - one structured log line: its key=value fields, and the one
 * place that renders them, as logfmt or as a JSON object.
 *
 * Values come from outside (staging ids, dataset paths, index names, the
 * messages of errors) and may hold '"', spaces, '=', backslashes, control
 * characters or bytes that are not UTF-8. The renderers make every line
 * parse back to the exact fields:
 *   logfmt  a value is written bare (an empty one as "key=") when it holds
 *           no byte <= ' ', no '=', '"', '\\', DEL and no byte outside valid UTF-8;
 *           otherwise it is quoted, with \" \\ \n \r \t and \u00XX for the
 *           other control characters (go-logfmt's rules, plus '\\' quoted).
 *   JSON    RFC 8259 escapes, ASCII only: other code points as \uXXXX
 *           (surrogate pairs above U+FFFF).
 * In both, a byte that is not part of valid UTF-8 is written \ufffd (one
 * per byte), so the two formats of one line always carry the same text.
 *
 * A line is made from a printf-like template, "event=job_held staging_id=%s
 * attempt=%d reason=\"%s\"": pairs separated by spaces, a value either a
 * run without spaces or a quoted run (which may hold spaces), each holding
 * literal text and conversions. The quotes of the template only delimit;
 * every value is escaped by the renderer, so a caller never quotes. A value
 * that is exactly one numeric conversion (%d, %u, %lld, %zu, %.2f ...) is a
 * number (a JSON number); any other is text, so an id that looks like a
 * number ("007") stays a JSON string.
 */
#ifndef SF_LOGLINE_H
#define SF_LOGLINE_H

#include <stdarg.h>
#include <stddef.h>

/* One field; key and value are NUL-terminated. */
typedef struct sf_log_field {
  const char *key;
  const char *value;
  int number; /* 1: the value is a number (a JSON number) */
} sf_log_field;

#define SF_LOGLINE_MAX_FIELDS 32
#define SF_LOGLINE_TEXT 8192

/* A line's fields and the bytes they point into; on the stack, no
 * allocation. A value longer than the room left is cut, and the line
 * still renders. */
typedef struct sf_logline {
  sf_log_field f[SF_LOGLINE_MAX_FIELDS];
  size_t n;
  char text[SF_LOGLINE_TEXT];
  size_t used;
} sf_logline;

/* Fills l from the template fmt and its arguments (see above). Fields past
 * SF_LOGLINE_MAX_FIELDS are dropped. */
void sf_logline_vformat(sf_logline *l, const char *fmt, va_list ap);
void sf_logline_format(sf_logline *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The fields as logfmt pairs "k=v k=\"v w\"", or as JSON members
 * "\"k\":\"v\",\"n\":1" (without braces), into buf (NUL-terminated when
 * size > 0). Returns the length of the whole rendering, as snprintf does:
 * a result >= size means buf was too small. */
size_t sf_logline_logfmt(const sf_log_field *f, size_t n, char *buf, size_t size);
size_t sf_logline_json(const sf_log_field *f, size_t n, char *buf, size_t size);

/* The value of key among the fields, or NULL. */
const char *sf_logline_get(const sf_log_field *f, size_t n, const char *key);

#endif
