/* dataset_fixture.c - see dataset_fixture.h. */
#include "tests/dataset_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/format/stage.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"
#include "tests/testutil.h"

#define DIM 8u

void dfx_init(dfx *x, const char *tag) {
  memset(x, 0, sizeof *x);
  snprintf(x->dir, sizeof x->dir, "%s", tu_tmpdir(tag));
  snprintf(x->vectors, sizeof x->vectors, "%s/vectors.fvecs", x->dir);
  snprintf(x->quantizer, sizeof x->quantizer, "%s/quantizer", x->dir);
  size_t n = (size_t)DFX_FRAGMENTS * DFX_ROWS_PER_FRAGMENT;
  float *v = malloc(n * DIM * sizeof *v);
  assert_non_null(v);
  sf_gen_clustered(v, n, DIM, 4, 0.1f, 7, 11);
  sf_err err = {0};
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(x->vectors, DIM, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, v, n, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params p = {
      .type = SF_IVF_SQ, .metric = SF_L2, .dim = DIM, .nlist = 4, .seed = 3};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&p, v, n, &q, &err), SF_OK);
  assert_int_equal(sf_quant_save(q, x->quantizer, &err), SF_OK);
  x->checksum = sf_quant_checksum(q);
  sf_quant_free(q);
  free(v);
}

void dfx_stage(const dfx *x, const char *ds, const char *staging_id, uint32_t first,
               unsigned nshards) {
  char root[4096];
  snprintf(root, sizeof root, "%s/%s/%s", ds, SF_CATALOG_STAGING_DIR, staging_id);
  sf_err err = {0};
  assert_int_equal(sf_fs_mkdirs(root, &err), SF_OK);
  size_t qlen;
  uint8_t *qbytes = tu_read_file(x->quantizer, &qlen);
  assert_int_equal(sf_fs_write_atomic(tu_path(root, "quantizer"), qbytes, qlen, &err),
                   SF_OK);
  free(qbytes);
  sf_quant *q;
  assert_int_equal(sf_quant_load(x->quantizer, &q, &err), SF_OK);
  for (unsigned i = 0; i < nshards; i++) {
    char id[16];
    snprintf(id, sizeof id, "s%u", i);
    roaring_bitmap_t *f = roaring_bitmap_from_range(first + 2 * i, first + 2 * i + 2, 1);
    sf_stage_opts o = {.vectors = x->vectors,
                       .staging_root = root,
                       .shard_id = id,
                       .fragments = f,
                       .rows_per_fragment = DFX_ROWS_PER_FRAGMENT};
    sf_stage_result res;
    if (sf_stage_shard(&o, q, &res, &err)) fail_msg("staging %s: %s", id, err.msg);
    free(res.path);
    sf_fragset_free(f);
  }
  sf_quant_free(q);
}

static int bad(char *why, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, size, fmt, ap);
  va_end(ap);
  return 1;
}

static int check_segment(const sf_catalog *c, const sf_catalog_index *ix,
                         const sf_catalog_segment *s, char *why, size_t size) {
  char *path = sf_catalog_segment_path(c, s);
  sf_seg_reader *r = NULL;
  sf_err err = {0};
  int rc = 0;
  if (sf_seg_open(path, &r, &err) || sf_seg_verify(r, &err)) {
    rc = bad(why, size, "version %" PRIu64 " names segment %s: %s", sf_catalog_version(c),
             s->info.segment_id, err.msg);
  } else {
    const sf_seg_params *p = sf_seg_get_params(r);
    if (sf_seg_file_bytes(r) != s->info.bytes || sf_seg_num_rows(r) != s->info.num_rows ||
        !roaring_bitmap_equals(sf_seg_fragments(r), s->info.fragments) ||
        p->quantizer_checksum != ix->quantizer_checksum || p->nlist != ix->nlist ||
        p->dim != ix->dim || (int)p->type != (int)ix->index_type)
      rc = bad(why, size, "version %" PRIu64 ": segment %s is not what it records",
               sf_catalog_version(c), s->info.segment_id);
  }
  sf_seg_close(r);
  free(path);
  return rc;
}

static int check_version(const char *ds, uint64_t v, char *why, size_t size) {
  sf_catalog *c;
  sf_err err = {0};
  if (sf_catalog_open_version(ds, v, &c, &err))
    return bad(why, size, "version %" PRIu64 " does not read: %s", v, err.msg);
  int rc = 0;
  for (size_t i = 0; !rc && i < sf_catalog_num_indexes(c); i++) {
    const sf_catalog_index *ix = sf_catalog_index_at(c, i);
    char *qp = sf_catalog_quantizer_path(c, ix);
    uint64_t cs = 0;
    if (sf_quant_checksum_of_file(qp, &cs, &err) || cs != ix->quantizer_checksum)
      rc = bad(why, size, "version %" PRIu64 " names quantizer %s: %s", v, qp,
               err.msg[0] ? err.msg : "another checksum");
    free(qp);
    for (size_t j = 0; !rc && j < ix->nsegs; j++)
      rc = check_segment(c, ix, &ix->segs[j], why, size);
  }
  sf_catalog_free(c);
  return rc;
}

int dfx_check(const char *ds, char *why, size_t size) {
  sf_catalog *c;
  sf_err err = {0};
  sf_code rc = sf_catalog_open_latest(ds, &c, &err);
  if (rc == SF_ENOTFOUND) return 0;
  if (rc) return bad(why, size, "the newest version does not read: %s", err.msg);
  sf_catalog_free(c);
  uint64_t *v = NULL;
  size_t n = 0;
  if (sf_catalog_list_versions(ds, &v, &n, &err))
    return bad(why, size, "cannot list the versions: %s", err.msg);
  int r = 0;
  for (size_t i = 0; !r && i < n; i++) r = check_version(ds, v[i], why, size);
  free(v);
  return r;
}

int dfx_committed(const char *ds, const char *staging_id) {
  sf_catalog *c;
  if (sf_catalog_open_latest(ds, &c, NULL)) return 0;
  sf_catalog_job j;
  int yes = 0;
  if (sf_catalog_lookup_job(c, staging_id, &j, &yes, NULL)) yes = 0;
  sf_catalog_job_clear(&j);
  sf_catalog_free(c);
  return yes;
}

static char scratch[256];

void dfx_scratch_in_memory(void) {
  snprintf(scratch, sizeof scratch, "/dev/shm/segforge-test.%ld.XXXXXX", (long)getpid());
  if (!mkdtemp(scratch)) {
    scratch[0] = '\0'; /* no memory file system: stay where SF_TEST_TMP says */
    return;
  }
  setenv("SF_TEST_TMP", scratch, 1);
}

void dfx_scratch_remove(void) {
  if (scratch[0]) dfx_rm_rf(scratch);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if ((flag == FTW_DP ? rmdir(path) : unlink(path)) && errno != ENOENT)
    fail_msg("cannot remove %s: %s", path, strerror(errno));
  return 0;
}

void dfx_rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st)) return;
  nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void dfx_copy_tree(const char *src, const char *dst) {
  struct stat st;
  assert_int_equal(lstat(src, &st), 0);
  if (S_ISREG(st.st_mode)) {
    size_t n;
    uint8_t *b = tu_read_file(src, &n);
    tu_write_file(dst, b, n);
    free(b);
    return;
  }
  assert_true(S_ISDIR(st.st_mode));
  if (mkdir(dst, 0755) && errno != EEXIST) fail_msg("mkdir %s: %s", dst, strerror(errno));
  DIR *d = opendir(src);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/%s", src, e->d_name);
    snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
    dfx_copy_tree(a, b);
  }
  closedir(d);
}
