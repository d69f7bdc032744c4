/*
 * cmd_commit.c - `segforge commit`: records already-built segments in the
 * dataset's catalog as one new version.
 *
 * The segments are read back from their files (sf_seg_open checks every
 * header, directory and bitmap CRC; --verify also every data block), so
 * what the catalog records is what is on disk, not what a flag claims.
 * `segforge build --json` output names the segments and their shard ids,
 * which segment files do not hold; it is the preferred --segments-from.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"

#define SEG_EXT ".sfseg"
#define MAX_INPUTS (1u << 20)

static void help(void) {
  printf(
      "usage: segforge commit --dataset D --index NAME --column COL --staging-id ID\n"
      "                       --segments-from FILE_OR_DIR [--replace] [--quantizer "
      "FILE]\n"
      "                       [--verify] [--json]\n\n"
      "Records the segments as one new catalog version of D (D/_indices/_catalog/).\n"
      "FILE_OR_DIR is the JSON printed by 'segforge build --json', a segment file, a\n"
      "file listing segment files one per line, or a directory whose *.sfseg files\n"
      "are all committed. Segment files must be in D/_indices/segments/.\n"
      "Committing the same staging id again changes nothing and prints its version.\n"
      "New segments may not share fragments with the index's segments; --replace\n"
      "swaps out the segments they cover whole (partly covered ones are refused).\n"
      "The quantizer (default D/_indices/_staging/ID/quantizer) is kept at\n"
      "D/_indices/quantizers/<checksum>. --verify checks every block CRC first.\n");
}

typedef struct inputs {
  sf_seginfo *segs;
  size_t n, cap;
} inputs;

static void inputs_free(inputs *in) {
  for (size_t i = 0; i < in->n; i++) sf_seginfo_clear(&in->segs[i]);
  free(in->segs);
}

/* Reads one segment file into a new entry: it must be a segment in
 * <ds>/_indices/segments/. `want` (may be NULL) is the entry of build's
 * JSON, whose bytes, rows and fragments must match the file. */
static sf_code add_file(inputs *in, const char *ds, const char *path, json_t *want,
                        int verify, sf_err *err) {
  char *real = realpath(path, NULL);
  int real_errno = errno;
  char *segdir = sf_fs_join(ds, SF_CATALOG_SEGMENTS_DIR);
  char *dir = real ? sf_fs_dirname(real) : NULL,
       *segreal = segdir ? realpath(segdir, NULL) : NULL;
  sf_seg_reader *r = NULL;
  sf_code rc = SF_OK;
  if (!real)
    rc = sf_err_errno(err, real_errno == ENOENT ? SF_ENOTFOUND : SF_EIO, real_errno,
                      "segment file %s", path);
  else if (!dir || !segreal || strcmp(dir, segreal))
    rc = sf_err_set(err, SF_EINVAL,
                    "%s is not in %s/: commit records segments where "
                    "'segforge build' writes them",
                    path, segdir ? segdir : "?");
  else if (!(rc = sf_seg_open(real, &r, err)) &&
           sf_seg_get_params(r)->kind != SF_SEG_KIND_SEGMENT)
    rc = sf_err_set(err, SF_EINVAL, "%s is a shard, not a segment: build it first", path);
  if (!rc && verify) rc = sf_seg_verify(r, err);
  if (!rc && in->n == in->cap) {
    size_t cap = in->cap ? 2 * in->cap : 16;
    sf_seginfo *ns = cap <= MAX_INPUTS ? realloc(in->segs, cap * sizeof *ns) : NULL;
    if (!ns)
      rc = sf_err_set(err, SF_ELIMIT, "too many segments");
    else
      in->segs = ns, in->cap = cap;
  }
  if (!rc) {
    const sf_seg_params *p = sf_seg_get_params(r);
    const char *name = strrchr(real, '/') + 1;
    size_t nl = strlen(name);
    sf_seginfo *s = &in->segs[in->n++];
    memset(s, 0, sizeof *s);
    s->segment_id = nl > strlen(SEG_EXT) && !strcmp(name + nl - strlen(SEG_EXT), SEG_EXT)
                        ? strndup(name, nl - strlen(SEG_EXT))
                        : strdup(name);
    s->path = malloc(nl + sizeof "segments/");
    if (s->path) sprintf(s->path, "segments/%s", name);
    s->bytes = sf_seg_file_bytes(r);
    s->num_rows = sf_seg_num_rows(r);
    s->fragments = roaring_bitmap_copy(sf_seg_fragments(r));
    s->index_type = p->type;
    s->metric = p->metric;
    s->dim = p->dim;
    s->nlist = p->nlist;
    s->quantizer_checksum = p->quantizer_checksum;
    if (!s->segment_id || !s->path || !s->fragments)
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  if (!rc && want) { /* build's description must be what is on disk */
    sf_seginfo *s = &in->segs[in->n - 1];
    json_t *ids = json_object_get(want, "shard_ids"),
           *id = json_object_get(want, "segment_id");
    const char *fr = json_string_value(json_object_get(want, "fragments"));
    char *have = sf_fragset_format(s->fragments);
    if ((json_integer_value(json_object_get(want, "bytes")) != (json_int_t)s->bytes) ||
        json_integer_value(json_object_get(want, "num_rows")) !=
            (json_int_t)s->num_rows ||
        !fr || !have || strcmp(fr, have))
      rc = sf_err_set(err, SF_EMISMATCH,
                      "%s does not match its description in "
                      "--segments-from (bytes, num_rows or fragments differ): rebuild it",
                      path);
    free(have);
    if (!rc && json_is_string(id)) {
      free(s->segment_id);
      s->segment_id = strdup(json_string_value(id));
    }
    size_t k = json_array_size(ids);
    if (!rc && k && (s->shard_ids = calloc(k, sizeof *s->shard_ids)))
      for (size_t i = 0; i < k && json_is_string(json_array_get(ids, i)); i++)
        s->shard_ids[s->num_shards++] = strdup(json_string_value(json_array_get(ids, i)));
  }
  sf_seg_close(r);
  free(real);
  free(dir);
  free(segdir);
  free(segreal);
  return rc;
}

static int has_ext(const char *name) {
  size_t n = strlen(name), e = strlen(SEG_EXT);
  return n > e && !strcmp(name + n - e, SEG_EXT) && !strstr(name, ".tmp.");
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static sf_code from_dir(inputs *in, const char *ds, const char *dir, int verify,
                        sf_err *err) {
  DIR *d = opendir(dir);
  if (!d) return sf_err_errno(err, SF_EIO, errno, "cannot list %s", dir);
  char **names = NULL;
  size_t n = 0, cap = 0;
  sf_code rc = SF_OK;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!has_ext(e->d_name)) continue;
    if (n == cap) {
      char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *nn);
      if (!nn)
        rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      else
        names = nn;
    }
    if (!rc && !(names[n++] = sf_fs_join(dir, e->d_name)))
      rc = sf_err_set(err, SF_ENOMEM, "oom");
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, cmp_name); /* a stable catalog order */
  for (size_t i = 0; i < n && !rc; i++)
    rc = add_file(in, ds, names[i], NULL, verify, err);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  if (!rc && !in->n)
    rc = sf_err_set(err, SF_ENOTFOUND, "no *%s files in %s", SEG_EXT, dir);
  return rc;
}

/* build --json: an array of {segment_id, path (relative to _indices/), ...}. */
static sf_code from_json(inputs *in, const char *ds, FILE *f, const char *file,
                         int verify, sf_err *err) {
  json_error_t je;
  json_t *arr = json_loadf(f, 0, &je);
  if (!json_is_array(arr) || !json_array_size(arr)) {
    json_decref(arr);
    return sf_err_set(err, SF_EINVAL,
                      "%s: expected the non-empty JSON array of 'segforge "
                      "build --json' (%s)",
                      file, je.text);
  }
  sf_code rc = SF_OK;
  for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
    json_t *o = json_array_get(arr, i);
    const char *rel = json_string_value(json_object_get(o, "path"));
    char *p = rel && strncmp(rel, "segments/", 9) == 0 && !strstr(rel, "..")
                  ? malloc(strlen(ds) + strlen(rel) + sizeof "/_indices/")
                  : NULL;
    if (!p) {
      rc = sf_err_set(err, SF_EINVAL, "%s: entry %zu has no path 'segments/<file>'", file,
                      i);
      break;
    }
    sprintf(p, "%s/_indices/%s", ds, rel);
    rc = add_file(in, ds, p, o, verify, err);
    free(p);
  }
  json_decref(arr);
  return rc;
}

/* A segment file itself, or a list of paths one per line ('#' comments).
 * The file must be a regular one: a FIFO would block, /dev/zero never ends. */
static sf_code from_file(inputs *in, const char *ds, const char *file, int verify,
                         sf_err *err) {
  FILE *f;
  sf_code rc = sf_fs_fopen_input(file, &f, NULL, err);
  if (rc) {
    sf_err_prefix(err, "--segments-from");
    return rc;
  }
  char line[8192];
  size_t got = fread(line, 1, SF_SEG_MAGIC_LEN, f);
  if (got == SF_SEG_MAGIC_LEN && !memcmp(line, SF_SEG_MAGIC, SF_SEG_MAGIC_LEN)) {
    fclose(f);
    return add_file(in, ds, file, NULL, verify, err);
  }
  size_t skip = 0;
  while (skip < got && (line[skip] == ' ' || line[skip] == '\n' || line[skip] == '\t'))
    skip++;
  rewind(f);
  if (skip < got && line[skip] == '[') {
    rc = from_json(in, ds, f, file, verify, err);
    fclose(f);
    return rc;
  }
  unsigned long lineno = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    size_t n = strlen(line);
    if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
      rc = sf_err_set(err, SF_ELIMIT, "%s:%lu: line longer than %zu bytes", file, lineno,
                      sizeof line - 2);
      break;
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0] || line[0] == '#') continue;
    rc = add_file(in, ds, line, NULL, verify, err);
  }
  if (!rc && ferror(f)) rc = sf_err_errno(err, SF_EIO, errno, "cannot read %s", file);
  fclose(f);
  if (!rc && !in->n) rc = sf_err_set(err, SF_EINVAL, "%s lists no segment files", file);
  return rc;
}

int cli_cmd_commit(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                {"column", required_argument, 0, 'c'},
                                CLI_OPT(CLI_FLAG_STAGING_ID),
                                {"segments-from", required_argument, 0, 'f'},
                                {"replace", no_argument, 0, 'r'},
                                {"quantizer", required_argument, 0, 'q'},
                                {"verify", no_argument, 0, 'v'},
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *dataset = NULL, *index = NULL, *column = NULL, *staging = NULL,
             *from = NULL;
  const char *quantizer = NULL;
  int replace = 0, verify = 0, json = 0, c;
  sf_err err = {0};
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("commit", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'd':
        dataset = optarg;
        break;
      case CLI_FLAG_INDEX:
      case CLI_FLAG_STAGING_ID:
        if (cli_flag_check_id(c, optarg, &err)) return cli_usage("commit", "%s", err.msg);
        *(c == CLI_FLAG_INDEX ? &index : &staging) = optarg;
        break;
      case 'c':
        column = optarg;
        break;
      case 'f':
        from = optarg;
        break;
      case 'r':
        replace = 1;
        break;
      case 'q':
        quantizer = optarg;
        break;
      case 'v':
        verify = 1;
        break;
      case 'j':
        json = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("commit", "unknown option");
    }
  }
  if (optind < argc) return cli_usage("commit", "unexpected argument '%s'", argv[optind]);
  if (!dataset || !index || !column || !staging || !from)
    return cli_usage("commit",
                     "--dataset, --index, --column, --staging-id and "
                     "--segments-from are required");
  char *ds;
  if (sf_catalog_resolve_dataset(dataset, &ds, &err)) return cli_fail("commit", &err);
  inputs in = {0};
  struct stat st;
  sf_code rc = !stat(from, &st) && S_ISDIR(st.st_mode)
                   ? from_dir(&in, ds, from, verify, &err)
                   : from_file(&in, ds, from, verify, &err);
  sf_catalog_commit_result res = {0};
  if (!rc) {
    sf_catalog_commit_req req = {.dataset = ds,
                                 .index_name = index,
                                 .column = column,
                                 .staging_id = staging,
                                 .segs = in.segs,
                                 .nsegs = in.n,
                                 .quantizer_path = quantizer,
                                 .replace = replace};
    rc = sf_catalog_commit(&req, &res, &err);
  }
  if (!rc && json) {
    json_t *o =
        json_pack("{s:I, s:b, s:i, s:I, s:s, s:s}", "version", (json_int_t)res.version,
                  "already", res.already, "attempts", (int)res.attempts, "replaced",
                  (json_int_t)res.nreplaced, "index", index, "staging_id", staging);
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (s) printf("%s\n", s);
    free(s);
    json_decref(o);
  } else if (!rc && res.already) {
    printf("job %s was already committed in version %" PRIu64 "; nothing written\n",
           staging, res.version);
  } else if (!rc) {
    printf("committed job %s to index %s as version %" PRIu64 ": %zu segments", staging,
           index, res.version, in.n);
    if (res.nreplaced) printf(", %zu replaced", res.nreplaced);
    printf("\n");
  }
  inputs_free(&in);
  free(ds);
  return rc ? cli_fail("commit", &err) : 0;
}
