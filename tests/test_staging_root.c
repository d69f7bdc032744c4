/* test_staging_root.c - a staging root for an incremental job
 * (sf_staging_root_from_index): a job staged against the copied quantizer
 * commits into the same index; running it again keeps the copy; a root
 * holding another quantizer is left alone; a damaged committed quantizer is
 * refused, naming the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/stage.h"
#include "core/pipeline/finalize.h"
#include "core/pipeline/staging_root.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"
#include "testutil.h"

#define DIM 8
#define RPF 50
#define ROWS (4 * RPF)

typedef struct fx {
  char ds[3000], vec[3100];
} fx;

static void root_of(const fx *f, const char *job, char *buf, size_t size) {
  snprintf(buf, size, "%s/%s/%s", f->ds, SF_CATALOG_STAGING_DIR, job);
}

/* Stages fragment `frag` of the vectors into job's root against the
 * quantizer there, and finalizes the job into index "idx". */
static sf_code stage_and_finalize(const fx *f, const char *job, uint32_t frag,
                                  sf_err *err) {
  char root[3200], qpath[3300];
  root_of(f, job, root, sizeof root);
  snprintf(qpath, sizeof qpath, "%s/quantizer", root);
  sf_quant *q;
  assert_int_equal(sf_quant_load(qpath, &q, err), SF_OK);
  roaring_bitmap_t *frags = roaring_bitmap_of(1, frag);
  sf_stage_opts so = {.vectors = f->vec,
                      .staging_root = root,
                      .shard_id = "s0",
                      .fragments = frags,
                      .rows_per_fragment = RPF};
  sf_stage_result sr;
  assert_int_equal(sf_stage_shard(&so, q, &sr, err), SF_OK);
  free(sr.path);
  roaring_bitmap_free(frags);
  sf_quant_free(q);
  sf_finalize_req req = {.dataset = f->ds,
                         .index_name = "idx",
                         .column = "emb",
                         .staging_id = job,
                         .index_type = -1,
                         .build = {.max_merges = 1}};
  sf_finalize_result res;
  sf_code rc = sf_finalize(&req, &res, err);
  sf_finalize_result_clear(&res);
  return rc;
}

/* A dataset whose index "idx" holds job-0 (fragment 0). */
static void fx_init(fx *f, const char *tag) {
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir(tag));
  snprintf(f->vec, sizeof f->vec, "%s/base.fvecs", f->ds);
  float *x = malloc(ROWS * DIM * sizeof *x);
  sf_gen_clustered(x, ROWS, DIM, 6, 0.3f, 5, 1);
  sf_err err = {0};
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(f->vec, DIM, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, x, ROWS, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params qp = {
      .type = SF_IVF_SQ, .metric = SF_L2, .dim = DIM, .nlist = 4, .seed = 3};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&qp, x, ROWS, &q, &err), SF_OK);
  char root[3200];
  root_of(f, "job-0", root, sizeof root);
  assert_int_equal(sf_fs_mkdirs(root, &err), SF_OK);
  assert_int_equal(sf_quant_save(q, tu_path(root, "quantizer"), &err), SF_OK);
  sf_quant_free(q);
  free(x);
  if (stage_and_finalize(f, "job-0", 0, &err)) fail_msg("job-0: %s", err.msg);
}

static sf_code from_index(const fx *f, const char *job, sf_staging_root_result *res,
                          sf_err *err) {
  char root[3200];
  root_of(f, job, root, sizeof root);
  sf_staging_root_req r = {.dataset = f->ds, .index_name = "idx", .root = root};
  return sf_staging_root_from_index(&r, res, err);
}

static void a_job_staged_against_the_copy_commits_into_the_same_index(void **st) {
  fx f;
  fx_init(&f, "staging-root-commit");
  sf_staging_root_result res;
  sf_err err = {0};
  if (from_index(&f, "job-1", &res, &err)) fail_msg("%s", err.msg);
  assert_int_equal(res.already, 0);
  assert_int_equal(res.index_type, SF_IVF_SQ);
  assert_int_equal(res.nlist, 4);
  uint64_t sum;
  assert_int_equal(sf_quant_checksum_of_file(res.quantizer_path, &sum, &err), SF_OK);
  assert_true(sum == res.checksum);
  sf_staging_root_result_clear(&res);
  if (stage_and_finalize(&f, "job-1", 1, &err)) fail_msg("job-1: %s", err.msg);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_find_index(c, "idx")->nsegs, 2);
  sf_catalog_free(c);
  /* Again: the same quantizer is there, nothing is written. */
  assert_int_equal(from_index(&f, "job-1", &res, &err), SF_OK);
  assert_int_equal(res.already, 1);
  sf_staging_root_result_clear(&res);
}

static void a_root_holding_another_quantizer_is_left_alone(void **st) {
  fx f;
  fx_init(&f, "staging-root-other");
  char root[3200];
  root_of(&f, "job-2", root, sizeof root);
  sf_err err = {0};
  assert_int_equal(sf_fs_mkdirs(root, &err), SF_OK);
  tu_write_file(tu_path(root, "quantizer"), "not a quantizer", 15);
  sf_staging_root_result res;
  assert_int_equal(from_index(&f, "job-2", &res, &err), SF_EEXIST);
  assert_non_null(strstr(err.msg, tu_path(root, "quantizer")));
  assert_null(res.quantizer_path);
}

static void a_damaged_committed_quantizer_is_refused_naming_the_file(void **st) {
  fx f;
  fx_init(&f, "staging-root-damaged");
  sf_catalog *c;
  sf_err err = {0};
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  char *qpath = sf_catalog_quantizer_path(c, sf_catalog_find_index(c, "idx"));
  sf_catalog_free(c);
  size_t len;
  free(tu_read_file(qpath, &len));
  tu_flip_byte(qpath, len / 2, 0x40);
  sf_staging_root_result res;
  sf_code rc = from_index(&f, "job-3", &res, &err);
  assert_true(rc == SF_ECORRUPT || rc == SF_EFORMAT || rc == SF_ECHECKSUM);
  assert_non_null(strstr(err.msg, qpath));
  char root[3200];
  root_of(&f, "job-3", root, sizeof root);
  FILE *q = fopen(tu_path(root, "quantizer"), "rb");
  assert_null(q); /* nothing copied */
  free(qpath);
  /* No such index. */
  sf_staging_root_req r = {.dataset = f.ds, .index_name = "other", .root = root};
  assert_int_equal(sf_staging_root_from_index(&r, &res, &err), SF_ENOTFOUND);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_job_staged_against_the_copy_commits_into_the_same_index),
      cmocka_unit_test(a_root_holding_another_quantizer_is_left_alone),
      cmocka_unit_test(a_damaged_committed_quantizer_is_refused_naming_the_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
