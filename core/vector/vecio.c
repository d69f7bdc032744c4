/*
 * vecio.c - see vecio.h.
 *
 * The reader streams through a stdio buffer: texmex rows are small and
 * read sequentially, so a 1 MiB buffer turns them into large reads without
 * mapping files that may be larger than memory. Each record's leading
 * dimension is checked against the first one; the file size was checked to
 * be an exact number of records at open, so a short read means the file
 * changed underneath us and is reported as such.
 */
#include "core/vector/vecio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"

static const char *const kind_ext[] = {".fvecs", ".ivecs", ".bvecs"};
static const size_t kind_elem[] = {4, 4, 1};

sf_code sf_vec_kind_of(const char *path, sf_vec_kind *kind, sf_err *err) {
  size_t n = strlen(path);
  for (int k = 0; k < 3; k++) {
    size_t e = strlen(kind_ext[k]);
    if (n > e && !strcmp(path + n - e, kind_ext[k])) {
      *kind = (sf_vec_kind)k;
      return SF_OK;
    }
  }
  return sf_err_set(err, SF_EINVAL,
                    "%s: unknown vector file type; name it *.fvecs (float32), *.ivecs "
                    "(int32) or *.bvecs (uint8)",
                    path);
}

struct sf_vecreader {
  FILE *f;
  char *path;
  char *buf;
  sf_vec_kind kind;
  uint32_t dim;
  uint64_t rows, next;
  size_t rec;   /* bytes per record */
  uint8_t *row; /* one record of scratch */
};

void sf_vecreader_free(sf_vecreader *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  free(r->buf);
  free(r->row);
  free(r->path);
  free(r);
}

sf_code sf_vecreader_open(const char *path, sf_vecreader **out, sf_err *err) {
  *out = NULL;
  sf_vec_kind kind = SF_VEC_FVECS; /* set by sf_vec_kind_of; -O3 cannot tell */
  sf_code rc = sf_vec_kind_of(path, &kind, err);
  if (rc) return rc;
  sf_vecreader *r = calloc(1, sizeof *r);
  if (!r || !(r->path = strdup(path))) {
    free(r);
    return sf_err_set(err, SF_ENOMEM, "out of memory opening %s", path);
  }
  r->kind = kind;
  /* A regular file only: a FIFO would block the open, /dev/zero never ends. */
  struct stat st;
  if ((rc = sf_fs_fopen_input(path, &r->f, &st, err))) {
    sf_vecreader_free(r);
    return rc;
  }
  r->buf = malloc(1 << 20);
  if (r->buf) setvbuf(r->f, r->buf, _IOFBF, 1 << 20);
  uint64_t size = (uint64_t)st.st_size;
  if (size == 0) {
    r->dim = 0;
    r->rows = 0;
    *out = r;
    return SF_OK;
  }
  int32_t d;
  if (size < 4 || fread(&d, 4, 1, r->f) != 1) {
    sf_vecreader_free(r);
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: truncated: %llu bytes is less than one record header", path,
                      (unsigned long long)size);
  }
  if (d <= 0 || (uint32_t)d > SF_MAX_DIM) {
    sf_vecreader_free(r);
    return sf_err_set(
        err, SF_ECORRUPT,
        "%s: first record has dimension %d; expected 1..%u (is this really a "
        "texmex %s file?)",
        path, d, SF_MAX_DIM, kind_ext[kind]);
  }
  r->dim = (uint32_t)d;
  r->rec = 4 + (size_t)r->dim * kind_elem[kind];
  if (size % r->rec) {
    size_t rec = r->rec;
    sf_vecreader_free(r);
    return sf_err_set(
        err, SF_ECORRUPT,
        "%s: %llu bytes is not a whole number of %zu-byte records of dimension "
        "%u: %llu complete rows and a truncated tail of %llu bytes",
        path, (unsigned long long)size, rec, (unsigned)d,
        (unsigned long long)(size / rec), (unsigned long long)(size % rec));
  }
  r->rows = size / r->rec;
  r->row = malloc(r->rec);
  if (!r->row || fseek(r->f, 0, SEEK_SET)) {
    sf_vecreader_free(r);
    return sf_err_set(err, SF_ENOMEM, "out of memory opening %s", path);
  }
  *out = r;
  return SF_OK;
}

sf_vec_kind sf_vecreader_kind(const sf_vecreader *r) {
  return r->kind;
}
uint32_t sf_vecreader_dim(const sf_vecreader *r) {
  return r->dim;
}
uint64_t sf_vecreader_rows(const sf_vecreader *r) {
  return r->rows;
}

sf_code sf_vecreader_seek(sf_vecreader *r, uint64_t row, sf_err *err) {
  if (row > r->rows)
    return sf_err_set(err, SF_EINVAL, "%s: row %llu is past the end (%llu rows)", r->path,
                      (unsigned long long)row, (unsigned long long)r->rows);
  if (fseeko(r->f, (off_t)(row * r->rec), SEEK_SET))
    return sf_err_errno(err, SF_EIO, errno, "%s: cannot seek to row %llu", r->path,
                        (unsigned long long)row);
  r->next = row;
  return SF_OK;
}

/* Reads one record into r->row and checks its dimension. */
static sf_code read_record(sf_vecreader *r, sf_err *err) {
  if (fread(r->row, r->rec, 1, r->f) != 1) {
    if (ferror(r->f)) /* a read that failed, not a file that ended */
      return sf_err_errno(err, SF_EIO, errno, "%s: cannot read row %llu", r->path,
                          (unsigned long long)r->next);
    return sf_err_set(err, SF_EIO,
                      "%s: short read at row %llu (file changed while reading?)", r->path,
                      (unsigned long long)r->next);
  }
  int32_t d;
  memcpy(&d, r->row, 4);
  if (d != (int32_t)r->dim)
    return sf_err_set(
        err, SF_ECORRUPT,
        "%s: row %llu has dimension %d but the file's first row has %u; all "
        "rows of a texmex file must have the same dimension",
        r->path, (unsigned long long)r->next, d, r->dim);
  r->next++;
  return SF_OK;
}

sf_code sf_vecreader_read_f32(sf_vecreader *r, float *dst, size_t max_rows, size_t *nread,
                              sf_err *err) {
  size_t n = 0;
  while (n < max_rows && r->next < r->rows) {
    sf_code rc = read_record(r, err);
    if (rc) return rc;
    float *o = dst + n * r->dim;
    const uint8_t *p = r->row + 4;
    if (r->kind == SF_VEC_FVECS) {
      memcpy(o, p, (size_t)r->dim * 4);
      for (uint32_t j = 0; j < r->dim; j++)
        if (!isfinite(o[j]))
          return sf_err_set(err, SF_ECORRUPT,
                            "%s: row %llu element %u is not a finite number (NaN or "
                            "infinity); fix the producer of the vectors",
                            r->path, (unsigned long long)(r->next - 1), j);
    } else if (r->kind == SF_VEC_IVECS) {
      for (uint32_t j = 0; j < r->dim; j++) {
        int32_t v;
        memcpy(&v, p + 4 * j, 4);
        o[j] = (float)v;
      }
    } else {
      for (uint32_t j = 0; j < r->dim; j++) o[j] = p[j];
    }
    n++;
  }
  *nread = n;
  return SF_OK;
}

sf_code sf_vecreader_read_i32(sf_vecreader *r, int32_t *dst, size_t max_rows,
                              size_t *nread, sf_err *err) {
  if (r->kind != SF_VEC_IVECS)
    return sf_err_set(err, SF_EINVAL, "%s: expected an .ivecs file", r->path);
  size_t n = 0;
  while (n < max_rows && r->next < r->rows) {
    sf_code rc = read_record(r, err);
    if (rc) return rc;
    memcpy(dst + n * r->dim, r->row + 4, (size_t)r->dim * 4);
    n++;
  }
  *nread = n;
  return SF_OK;
}

sf_code sf_vec_load_f32(const char *path, uint64_t first, uint64_t count,
                        size_t max_bytes, float **out, uint64_t *rows, uint32_t *dim,
                        sf_err *err) {
  *out = NULL;
  sf_vecreader *r;
  sf_code rc = sf_vecreader_open(path, &r, err);
  if (rc) return rc;
  uint64_t total = r->rows;
  if (first > total) {
    sf_vecreader_free(r);
    return sf_err_set(err, SF_EINVAL, "%s has %llu rows; cannot start at row %llu", path,
                      (unsigned long long)total, (unsigned long long)first);
  }
  if (count == UINT64_MAX || count > total - first) count = total - first;
  if (count && r->dim && count > max_bytes / 4 / r->dim) {
    uint32_t d = r->dim;
    sf_vecreader_free(r);
    return sf_err_set(
        err, SF_ELIMIT,
        "%s: %llu rows of dimension %u exceed the %zu MiB this step may load; "
        "use fewer rows",
        path, (unsigned long long)count, d, max_bytes >> 20);
  }
  float *x = malloc(count ? count * r->dim * sizeof(float) : 1);
  if (!x) {
    sf_vecreader_free(r);
    return sf_err_set(err, SF_ENOMEM, "out of memory loading %s", path);
  }
  size_t got = 0;
  rc = sf_vecreader_seek(r, first, err);
  if (!rc) rc = sf_vecreader_read_f32(r, x, count, &got, err);
  *dim = r->dim;
  sf_vecreader_free(r);
  if (rc) {
    free(x);
    return rc;
  }
  *out = x;
  *rows = got;
  return SF_OK;
}

struct sf_vecwriter {
  sf_fs_tmpfile t;
  FILE *f;
  sf_vec_kind kind;
  uint32_t dim;
};

sf_code sf_vecwriter_open(const char *path, uint32_t dim, sf_vecwriter **out,
                          sf_err *err) {
  *out = NULL;
  sf_vec_kind kind = SF_VEC_FVECS; /* set by sf_vec_kind_of; -O3 cannot tell */
  sf_code rc = sf_vec_kind_of(path, &kind, err);
  if (rc) return rc;
  if (dim == 0 || dim > SF_MAX_DIM)
    return sf_err_set(err, SF_EINVAL, "%s: dimension %u out of range 1..%u", path, dim,
                      SF_MAX_DIM);
  sf_vecwriter *w = calloc(1, sizeof *w);
  if (!w) return sf_err_set(err, SF_ENOMEM, "out of memory");
  w->kind = kind;
  w->dim = dim;
  rc = sf_fs_tmpfile_open(&w->t, path, err);
  if (rc) {
    free(w);
    return rc;
  }
  /* stdio gets its own descriptor so that fclose and the tmpfile's commit
   * each close exactly one; fsync through either flushes the same file. */
  int fd2 = dup(w->t.fd);
  w->f = fd2 >= 0 ? fdopen(fd2, "wb") : NULL;
  if (!w->f) {
    int e = errno; /* before the clean-up's calls */
    if (fd2 >= 0) close(fd2);
    sf_fs_tmpfile_abort(&w->t);
    free(w);
    return sf_err_errno(err, SF_EIO, e, "cannot write %s", path);
  }
  *out = w;
  return SF_OK;
}

static sf_code wfail(sf_vecwriter *w, sf_err *err) {
  return sf_err_errno(err, SF_EIO, errno, "cannot write %s", w->t.tmp_path);
}

sf_code sf_vecwriter_write_f32(sf_vecwriter *w, const float *src, size_t n, sf_err *err) {
  int32_t d = (int32_t)w->dim;
  for (size_t i = 0; i < n; i++) {
    const float *v = src + i * w->dim;
    if (fwrite(&d, 4, 1, w->f) != 1) return wfail(w, err);
    if (w->kind == SF_VEC_FVECS) {
      if (fwrite(v, 4, w->dim, w->f) != w->dim) return wfail(w, err);
    } else if (w->kind == SF_VEC_BVECS) {
      for (uint32_t j = 0; j < w->dim; j++) {
        float x = v[j] < 0 ? 0 : v[j] > 255 ? 255 : v[j];
        if (fputc((int)lrintf(x), w->f) == EOF) return wfail(w, err);
      }
    } else {
      for (uint32_t j = 0; j < w->dim; j++) {
        int32_t x = (int32_t)lrintf(v[j]);
        if (fwrite(&x, 4, 1, w->f) != 1) return wfail(w, err);
      }
    }
  }
  return SF_OK;
}

sf_code sf_vecwriter_write_i32(sf_vecwriter *w, const int32_t *src, size_t n,
                               sf_err *err) {
  if (w->kind != SF_VEC_IVECS)
    return sf_err_set(err, SF_EINVAL, "%s: int32 rows go to an .ivecs file", w->t.path);
  int32_t d = (int32_t)w->dim;
  for (size_t i = 0; i < n; i++)
    if (fwrite(&d, 4, 1, w->f) != 1 ||
        fwrite(src + i * w->dim, 4, w->dim, w->f) != w->dim)
      return wfail(w, err);
  return SF_OK;
}

sf_code sf_vecwriter_close(sf_vecwriter *w, sf_err *err) {
  sf_code rc = SF_OK;
  if (fclose(w->f)) rc = wfail(w, err);
  if (!rc)
    rc = sf_fs_tmpfile_commit(&w->t, err); /* fsync, rename, fsync dir */
  else
    sf_fs_tmpfile_abort(&w->t);
  free(w);
  return rc;
}

void sf_vecwriter_abort(sf_vecwriter *w) {
  if (!w) return;
  sf_fs_tmpfile_abort(&w->t);
  fclose(w->f);
  free(w);
}
