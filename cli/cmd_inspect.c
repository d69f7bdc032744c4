/*
 * cmd_inspect.c - `segforge inspect FILE [--json]`: says what a file is and
 * whether it is intact. The kind of file is recognised by its magic bytes,
 * never by its name, so a renamed or mislabelled file is still described.
 *
 * Shard and segment files: header parameters, rows, per-partition rows and
 * chunks (a compact summary as text, the full list in JSON), fragments as a
 * range list, and a full verification (every block CRC, every row-id block,
 * padding, fragments); exit 1 if the file is damaged.
 *
 * `inspect --dataset D`: the catalog's versions and, in the newest (or the
 * one asked for), every logical index with its segments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/vector/quantizer.h"

static void help(void) {
  printf(
      "usage: segforge inspect FILE [--json]\n"
      "       segforge inspect --dataset D [--index NAME] [--version V] [--json]\n\n"
      "Describes a shard, segment or quantizer file, recognised by its contents:\n"
      "parameters, rows, partitions, fragments, and whether every checksum holds.\n"
      "Text shows a summary of the partitions; --json lists each of them.\n"
      "Exits 1 if the file is damaged or not one of these kinds.\n"
      "With --dataset, lists the catalog: versions, indexes and their segments.\n");
}

/* ---- shard and segment files -------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void print_seg_text(const sf_seg_reader *r, const char *frags,
                           const sf_err *verr) {
  const sf_seg_params *p = sf_seg_get_params(r);
  uint32_t major, minor;
  sf_seg_version(r, &major, &minor);
  uint64_t chunks = 0, nonempty = 0, min = UINT64_MAX, max = 0;
  uint64_t *rows = malloc((size_t)p->nlist * sizeof *rows);
  for (uint32_t i = 0; i < p->nlist; i++) {
    uint64_t n = sf_seg_partition_rows(r, i);
    chunks += sf_seg_partition_num_chunks(r, i);
    nonempty += n > 0;
    if (n < min) min = n;
    if (n > max) max = n;
    if (rows) rows[i] = n;
  }
  printf("file        %s\n", sf_seg_path(r));
  printf("kind        %s (format %u.%u), %" PRIu64 " bytes\n", sf_seg_kind_name(p->kind),
         major, minor, sf_seg_file_bytes(r));
  printf("index       %s  metric %s  dim %u  nlist %u  code_size %u",
         sf_index_type_name(p->type), sf_metric_name(p->metric), p->dim, p->nlist,
         p->code_size);
  if (p->type == SF_IVF_PQ) printf("  pq_m %u", p->pq_m);
  printf("\nquantizer   %016" PRIx64 "\n", p->quantizer_checksum);
  printf("rows        %" PRIu64 " in %" PRIu64 " chunks (largest %u rows)\n",
         sf_seg_num_rows(r), chunks, sf_seg_max_chunk_rows(r));
  printf("fragments   %s (%" PRIu64 ")\n", frags[0] ? frags : "none",
         roaring_bitmap_get_cardinality(sf_seg_fragments(r)));
  printf("partitions  %u, %" PRIu64 " non-empty", p->nlist, nonempty);
  if (rows) {
    qsort(rows, p->nlist, sizeof *rows, cmp_u64);
    printf("; rows per partition min %" PRIu64 " / median %" PRIu64 " / max %" PRIu64,
           min, rows[p->nlist / 2], max);
  }
  printf("\n");
  if (verr)
    printf("checksums   FAILED: %s\n", verr->msg);
  else
    printf("checksums   OK (every block verified)\n");
  free(rows);
}

static int print_seg_json(const sf_seg_reader *r, const char *frags, const sf_err *verr) {
  const sf_seg_params *p = sf_seg_get_params(r);
  uint32_t major, minor;
  sf_seg_version(r, &major, &minor);
  char ver[32], qsum[32];
  snprintf(ver, sizeof ver, "%u.%u", major, minor);
  /* 64-bit checksums go out as hex strings: JSON numbers lose bits past 2^53. */
  snprintf(qsum, sizeof qsum, "%016" PRIx64, p->quantizer_checksum);
  json_t *parts = json_array();
  for (uint32_t i = 0; parts && i < p->nlist; i++)
    json_array_append_new(
        parts,
        json_pack("{s:I, s:I, s:I}", "rows", (json_int_t)sf_seg_partition_rows(r, i),
                  "chunks", (json_int_t)sf_seg_partition_num_chunks(r, i), "bytes",
                  (json_int_t)sf_seg_partition_bytes(r, i)));
  json_t *o = json_pack(
      "{s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:s, s:I, s:o, "
      "s:b, "
      "s:s?}",
      "file", sf_seg_path(r), "kind", sf_seg_kind_name(p->kind), "format_version", ver,
      "bytes", (json_int_t)sf_seg_file_bytes(r), "index_type",
      sf_index_type_name(p->type), "metric", sf_metric_name(p->metric), "dim",
      (json_int_t)p->dim, "nlist", (json_int_t)p->nlist, "code_size",
      (json_int_t)p->code_size, "pq_m", (json_int_t)p->pq_m, "quantizer_checksum", qsum,
      "num_rows", (json_int_t)sf_seg_num_rows(r), "max_chunk_rows",
      (json_int_t)sf_seg_max_chunk_rows(r), "fragments", frags, "num_fragments",
      (json_int_t)roaring_bitmap_get_cardinality(sf_seg_fragments(r)), "partitions",
      parts, "verified", verr == NULL, "error", verr ? verr->msg : NULL);
  if (!o || json_dumpf(o, stdout, JSON_INDENT(2)) < 0) {
    json_decref(o);
    fprintf(stderr, "segforge inspect: out of memory formatting JSON\n");
    return 1;
  }
  printf("\n");
  json_decref(o);
  return 0;
}

static int inspect_seg(const char *path, int json) {
  sf_seg_reader *r;
  sf_err err = {0}, verr = {0};
  if (sf_seg_open(path, &r, &err)) return cli_fail("inspect", &err);
  const int bad = sf_seg_verify(r, &verr) != SF_OK;
  char *frags = sf_fragset_format(sf_seg_fragments(r));
  int rc = 1;
  if (!frags) {
    sf_err_set(&err, SF_ENOMEM, "out of memory formatting fragments");
    cli_fail("inspect", &err);
  } else if (json) {
    rc = print_seg_json(r, frags, bad ? &verr : NULL);
  } else {
    print_seg_text(r, frags, bad ? &verr : NULL);
    rc = 0;
  }
  if (bad) { /* the description went to stdout; the failure also to stderr */
    cli_fail("inspect", &verr);
    rc = 1;
  }
  free(frags);
  sf_seg_close(r);
  return rc;
}

/* A quantizer file: its parameters, checksum (its identity) and, by
 * loading it, whether its payload matches that checksum. */
static int inspect_quant(const char *path, int json) {
  sf_quant *q;
  sf_err err = {0};
  if (sf_quant_load(path, &q, &err)) return cli_fail("inspect", &err);
  json_t *o = sf_quant_describe_json(q);
  sf_quant_free(q);
  if (!o) {
    sf_err_set(&err, SF_ENOMEM, "out of memory describing %s", path);
    return cli_fail("inspect", &err);
  }
  json_object_set_new(o, "kind", json_string("quantizer"));
  json_object_set_new(o, "path", json_string(path));
  json_object_set_new(o, "verified", json_true());
  if (json) {
    json_dumpf(o, stdout, JSON_INDENT(2));
    printf("\n");
  } else {
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
      char *txt = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY);
      printf("%-12s %s\n", key, txt ? txt : json_string_value(v));
      free(txt);
    }
  }
  json_decref(o);
  return 0;
}

/* ---- recognising a file by its magic ------------------------------------
 * One row per kind of file; the catalog is inspected by dataset (--dataset),
 * not by file. */
static const struct {
  const char *magic;
  size_t len;
  int (*inspect)(const char *path, int json);
} kinds[] = {
    {SF_SEG_MAGIC, SF_SEG_MAGIC_LEN, inspect_seg},
    {SF_QUANT_MAGIC, SF_QUANT_MAGIC_LEN, inspect_quant},
};

static int inspect_file(const char *path, int json) {
  uint8_t head[16] = {0};
  FILE *f;
  sf_err err = {0};
  if (sf_fs_fopen_input(path, &f, NULL, &err)) return cli_fail("inspect", &err);
  size_t got = fread(head, 1, sizeof head, f);
  fclose(f);
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (got >= kinds[i].len && !memcmp(head, kinds[i].magic, kinds[i].len))
      return kinds[i].inspect(path, json);
  sf_err_set(&err, SF_EFORMAT,
             "%s: not a shard, segment or quantizer file (unknown magic)", path);
  return cli_fail("inspect", &err);
}

/* ---- inspect --dataset: the catalog ---------------------------------------- */

static void inspect_help(void) {
  printf(
      "usage: segforge inspect --dataset D [--index NAME] [--version N] [--json]\n\n"
      "Describes the catalog of D: its versions, and in the newest (or version N)\n"
      "every logical index with its parameters, quantizer and segments.\n");
}

static void print_text(const sf_catalog *c, const uint64_t *v, size_t nv,
                       const char *only) {
  time_t t = (time_t)(sf_catalog_created_at_ms(c) / 1000);
  char when[32];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
  printf("dataset   %s\n", sf_catalog_dataset(c));
  printf("versions  %zu on disk, %" PRIu64 "..%" PRIu64 "\n", nv, nv ? v[0] : 0,
         nv ? v[nv - 1] : 0);
  printf("version   %" PRIu64 "  created %s  %zu indexes, %" PRIu64 " jobs committed\n",
         sf_catalog_version(c), when, sf_catalog_num_indexes(c),
         sf_catalog_num_jobs_total(c));
  for (size_t i = 0; i < sf_catalog_num_indexes(c); i++) {
    const sf_catalog_index *ix = sf_catalog_index_at(c, i);
    if (only && strcmp(only, ix->name)) continue;
    uint64_t rows = 0, bytes = 0;
    for (size_t k = 0; k < ix->nsegs; k++) {
      rows += ix->segs[k].info.num_rows;
      bytes += ix->segs[k].info.bytes;
    }
    printf("\nindex %s  column %s  %s %s  dim %u  nlist %u  quantizer %016" PRIx64 "\n",
           ix->name, ix->column, sf_index_type_name(ix->index_type),
           sf_metric_name(ix->metric), ix->dim, ix->nlist, ix->quantizer_checksum);
    printf("  %zu segments, %" PRIu64 " rows, %" PRIu64 " bytes\n", ix->nsegs, rows,
           bytes);
    for (size_t k = 0; k < ix->nsegs; k++) {
      const sf_catalog_segment *s = &ix->segs[k];
      char *fr = sf_fragset_format_short(s->info.fragments, 6);
      printf("  %-40s %10" PRIu64 " rows %12" PRIu64
             " bytes  fragments %s  (job %s, v%" PRIu64 ")\n",
             s->info.segment_id, s->info.num_rows, s->info.bytes, fr ? fr : "?",
             s->staging_id, s->added_in);
      free(fr);
    }
  }
}

static int inspect_dataset(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                CLI_OPT(CLI_FLAG_VERSION),
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *dataset = NULL, *index = NULL;
  uint64_t version = 0;
  int json = 0, c;
  sf_err err = {0};
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd':
        dataset = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (cli_flag_check_id(c, optarg, &err))
          return cli_usage("inspect", "%s", err.msg);
        index = optarg;
        break;
      case CLI_FLAG_VERSION:
        if (cli_flag_u64(c, optarg, &version, &err))
          return cli_usage("inspect", "%s", err.msg);
        break;
      case 'j':
        json = 1;
        break;
      case 'h':
        inspect_help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("inspect", "unknown option");
    }
  }
  if (!dataset) return cli_usage("inspect", "--dataset D is required");
  if (optind < argc)
    return cli_usage("inspect", "unexpected argument '%s'", argv[optind]);
  uint64_t *v = NULL;
  size_t nv = 0;
  sf_catalog *cat = NULL;
  if (sf_catalog_list_versions(dataset, &v, &nv, &err) ||
      (version ? sf_catalog_open_version(dataset, version, &cat, &err)
               : sf_catalog_open_latest(dataset, &cat, &err))) {
    free(v);
    return cli_fail("inspect", &err);
  }
  int rc = 0;
  if (index && !sf_catalog_find_index(cat, index)) {
    sf_err_set(&err, SF_ENOTFOUND, "version %" PRIu64 " of %s has no index '%s'",
               sf_catalog_version(cat), dataset, index);
    rc = cli_fail("inspect", &err);
  } else if (json) {
    json_t *o = sf_catalog_describe_json(cat, index), *vs = json_array();
    for (size_t i = 0; vs && i < nv; i++)
      json_array_append_new(vs, json_integer((json_int_t)v[i]));
    if (o) json_object_set_new(o, "dataset", json_string(sf_catalog_dataset(cat)));
    if (o && vs) json_object_set_new(o, "versions", vs);
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (s)
      printf("%s\n", s);
    else
      rc = 1;
    free(s);
    json_decref(o);
  } else {
    print_text(cat, v, nv, index);
  }
  sf_catalog_free(cat);
  free(v);
  return rc;
}

int cli_cmd_inspect(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int json = 0, c;
  for (int i = 1; i < argc; i++) /* the catalog form: inspect --dataset D ... */
    if (!strcmp(argv[i], "--dataset") || !strncmp(argv[i], "--dataset=", 10))
      return inspect_dataset(argc, argv);
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'j')
      json = 1;
    else if (c == 'h') {
      help();
      return 0;
    } else {
      return cli_usage("inspect", "unknown option");
    }
  }
  if (optind != argc - 1) return cli_usage("inspect", "expects exactly one FILE");
  return inspect_file(argv[optind], json);
}
