/*
 * logline.c - a log line's fields from a template, and their rendering as
 * logfmt or JSON (logline.h says the rules).
 */
#include "processor/logline.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

/* ---- the fields from a template -------------------------------------------- */

static void put(sf_logline *l, char c) {
  if (l->used + 1 < sizeof l->text) l->text[l->used++] = c;
}

static void puts_(sf_logline *l, const char *s) {
  for (; *s; s++) put(l, *s);
}

/* One conversion at *pp (at its '%'), its argument taken from ap, appended
 * to l. Returns whether it is numeric; advances *pp past it. */
static int convert(sf_logline *l, const char **pp, va_list *ap) {
  const char *p = *pp + 1;
  char spec[32];
  p += strspn(p, "-+ #0");
  p += strspn(p, "0123456789");
  if (*p == '.') p += 1 + strspn(p + 1, "0123456789");
  char len[3] = {0};
  if ((p[0] == 'h' && p[1] == 'h') || (p[0] == 'l' && p[1] == 'l')) {
    len[0] = p[0], len[1] = p[1];
    p += 2;
  } else if (*p && strchr("hlzjtL", *p)) {
    len[0] = *p++;
  }
  char conv = *p ? *p++ : 's';
  size_t sn = (size_t)(p - *pp);
  if (sn >= sizeof spec) sn = sizeof spec - 1;
  memcpy(spec, *pp, sn);
  spec[sn] = '\0';
  *pp = p;
  char tmp[128];
  tmp[0] = '\0';
  int numeric = 1;
  switch (conv) {
    case 'd':
    case 'i':
      if (!strcmp(len, "ll"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long long));
      else if (!strcmp(len, "l"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long));
      else if (!strcmp(len, "z"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, ssize_t));
      else if (!strcmp(len, "j"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, intmax_t));
      else if (!strcmp(len, "t"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, ptrdiff_t));
      else
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, int));
      break;
    case 'u':
    case 'x':
    case 'X':
    case 'o':
      numeric = conv == 'u';
      if (!strcmp(len, "ll"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned long long));
      else if (!strcmp(len, "l"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned long));
      else if (!strcmp(len, "z"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, size_t));
      else if (!strcmp(len, "j"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, uintmax_t));
      else if (!strcmp(len, "t"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, ptrdiff_t));
      else
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned));
      break;
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G':
      if (!strcmp(len, "L"))
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long double));
      else
        snprintf(tmp, sizeof tmp, spec, va_arg(*ap, double));
      break;
    case 'c':
      numeric = 0;
      snprintf(tmp, sizeof tmp, "%c", va_arg(*ap, int));
      break;
    case 'p':
      numeric = 0;
      snprintf(tmp, sizeof tmp, "%p", va_arg(*ap, void *));
      break;
    default: { /* 's': the text itself, whatever its length */
      const char *s = va_arg(*ap, const char *);
      puts_(l, s ? s : "(null)");
      return 0;
    }
  }
  puts_(l, tmp);
  return numeric;
}

void sf_logline_vformat(sf_logline *l, const char *fmt, va_list ap0) {
  va_list ap;
  va_copy(ap, ap0);
  l->n = 0;
  l->used = 0;
  const char *p = fmt;
  while (*p && l->n < SF_LOGLINE_MAX_FIELDS && l->used + 4 < sizeof l->text) {
    while (*p == ' ') p++;
    if (!*p) break;
    size_t k = l->used;
    while (*p && *p != '=' && *p != ' ') put(l, *p++);
    put(l, '\0');
    size_t v = l->used;
    int quoted = 0, convs = 0, literal = 0, numeric = 0;
    if (*p == '=') {
      p++;
      quoted = *p == '"';
      p += quoted;
    }
    while (*p && (quoted ? *p != '"' : *p != ' ')) {
      if (p[0] == '%' && p[1] == '%') {
        put(l, '%');
        literal = 1;
        p += 2;
      } else if (*p == '%') {
        numeric = convert(l, &p, &ap);
        convs++;
      } else {
        put(l, *p++);
        literal = 1;
      }
    }
    if (quoted && *p == '"') p++;
    /* A value cut short keeps room for its NUL (put stops one byte early). */
    l->text[l->used < sizeof l->text ? l->used : sizeof l->text - 1] = '\0';
    if (l->used < sizeof l->text) l->used++;
    l->f[l->n].key = l->text + k;
    l->f[l->n].value = l->text + v;
    l->f[l->n].number = convs == 1 && !literal && numeric && l->text[v];
    l->n++;
  }
  va_end(ap);
}

void sf_logline_format(sf_logline *l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sf_logline_vformat(l, fmt, ap);
  va_end(ap);
}

const char *sf_logline_get(const sf_log_field *f, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(f[i].key, key)) return f[i].value;
  return NULL;
}

/* ---- rendering --------------------------------------------------------------- */

typedef struct out {
  char *buf;
  size_t size, len;
} out;

static void w(out *o, char c) {
  if (o->len + 1 < o->size) o->buf[o->len] = c;
  o->len++;
}

static void ws(out *o, const char *s) {
  for (; *s; s++) w(o, *s);
}

static void whex4(out *o, unsigned v) {
  static const char hex[] = "0123456789abcdef";
  ws(o, "\\u");
  for (int sh = 12; sh >= 0; sh -= 4) w(o, hex[(v >> sh) & 15]);
}

/* The length of the valid UTF-8 sequence at s (1 to 4) and its code point,
 * or 0 when the byte at s starts none: a stray continuation byte, an
 * overlong form, a surrogate, past U+10FFFF, or cut short. */
static size_t utf8_seq(const unsigned char *s, uint32_t *cp) {
  unsigned c = s[0];
  size_t n;
  uint32_t v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xe0) == 0xc0) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
    v = (v << 6) | (s[i] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

/* An empty value is bare too, "key=", as go-logfmt writes it and any
 * logfmt reader reads it. */
static int logfmt_bare(const char *v) {
  for (const unsigned char *s = (const unsigned char *)v; *s;) {
    uint32_t cp;
    size_t n = utf8_seq(s, &cp);
    if (!n || cp <= ' ' || cp == '=' || cp == '"' || cp == '\\' || cp == 0x7f) return 0;
    s += n;
  }
  return 1;
}

static void logfmt_value(out *o, const char *v) {
  if (logfmt_bare(v)) {
    ws(o, v);
    return;
  }
  w(o, '"');
  for (const unsigned char *s = (const unsigned char *)v; *s;) {
    uint32_t cp;
    size_t n = utf8_seq(s, &cp);
    if (!n) {
      whex4(o, 0xfffd);
      s++;
      continue;
    }
    if (cp == '"' || cp == '\\') {
      w(o, '\\');
      w(o, (char)cp);
    } else if (cp == '\n') {
      ws(o, "\\n");
    } else if (cp == '\r') {
      ws(o, "\\r");
    } else if (cp == '\t') {
      ws(o, "\\t");
    } else if (cp < 0x20 || cp == 0x7f) {
      whex4(o, cp);
    } else {
      for (size_t i = 0; i < n; i++) w(o, (char)s[i]);
    }
    s += n;
  }
  w(o, '"');
}

static void json_string(out *o, const char *v) {
  w(o, '"');
  for (const unsigned char *s = (const unsigned char *)v; *s;) {
    uint32_t cp;
    size_t n = utf8_seq(s, &cp);
    if (!n) {
      whex4(o, 0xfffd);
      s++;
      continue;
    }
    s += n;
    switch (cp) {
      case '"':
        ws(o, "\\\"");
        break;
      case '\\':
        ws(o, "\\\\");
        break;
      case '\b':
        ws(o, "\\b");
        break;
      case '\f':
        ws(o, "\\f");
        break;
      case '\n':
        ws(o, "\\n");
        break;
      case '\r':
        ws(o, "\\r");
        break;
      case '\t':
        ws(o, "\\t");
        break;
      default:
        if (cp < 0x20 || cp >= 0x7f) {
          if (cp > 0xffff) {
            whex4(o, 0xd800 + ((cp - 0x10000) >> 10));
            whex4(o, 0xdc00 + ((cp - 0x10000) & 0x3ff));
          } else {
            whex4(o, cp);
          }
        } else {
          w(o, (char)cp);
        }
    }
  }
  w(o, '"');
}

/* Whether v is a JSON number (RFC 8259, section 6): not "nan", "inf",
 * "1." or "+1", which printf may write. */
static int json_number(const char *v) {
  const char *p = v;
  if (*p == '-') p++;
  if (*p == '0')
    p++;
  else if (*p >= '1' && *p <= '9')
    p += strspn(p, "0123456789");
  else
    return 0;
  if (*p == '.') {
    size_t d = strspn(p + 1, "0123456789");
    if (!d) return 0;
    p += 1 + d;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    size_t d = strspn(p, "0123456789");
    if (!d) return 0;
    p += d;
  }
  return !*p;
}

static size_t finish(out *o) {
  if (o->size) o->buf[o->len < o->size ? o->len : o->size - 1] = '\0';
  return o->len;
}

size_t sf_logline_logfmt(const sf_log_field *f, size_t n, char *buf, size_t size) {
  out o = {buf, size, 0};
  for (size_t i = 0; i < n; i++) {
    if (i) w(&o, ' ');
    ws(&o, f[i].key);
    w(&o, '=');
    logfmt_value(&o, f[i].value);
  }
  return finish(&o);
}

size_t sf_logline_json(const sf_log_field *f, size_t n, char *buf, size_t size) {
  out o = {buf, size, 0};
  for (size_t i = 0; i < n; i++) {
    if (i) w(&o, ',');
    json_string(&o, f[i].key);
    w(&o, ':');
    if (f[i].number && json_number(f[i].value))
      ws(&o, f[i].value);
    else
      json_string(&o, f[i].value);
  }
  return finish(&o);
}
