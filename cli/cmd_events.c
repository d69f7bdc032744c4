/*
 * cmd_events.c - `segforge events`: Avro <-> JSON for the events of the
 * design, one event per invocation on stdin/stdout so that it sits in a pipe
 * with kcat:
 *
 *   segforge events encode --type ShardStaged < e.json | kcat -P -t T -k K -D ''
 *   kcat -C -t T -c 1 -e -D '' | segforge events decode
 *   segforge events schema --type SegmentsCommitted [--canonical]
 *
 * A rejected event exits 1 with "segforge events: <REASON>: <message>", the
 * reason being the code the consumer would dead-letter it with.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/fsutil.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/event_json.h"
#include "schemas/schema.h"

#define MAX_INPUT (64u << 20) /* far above any Kafka message */

static void help(void) {
  printf(
      "usage: segforge events encode --type TYPE [--framing single|confluent]\n"
      "                              [--schema-id TYPE=ID]... [--no-validate] < JSON > "
      "AVRO\n"
      "       segforge events decode [--framing auto|single|confluent] [--type TYPE]\n"
      "                              [--schema-id TYPE=ID]... [--writer-schema FILE]...\n"
      "                              [--envelope] [--compact] [--no-validate] < AVRO > "
      "JSON\n"
      "       segforge events schema --type TYPE [--canonical | --fingerprint]\n\n"
      "TYPE is ShardStaged, SegmentsCommitted, ShardRejected or SegmentsCompacted.\n"
      "One event per run.\n"
      "encode writes the single-object encoding (C3 01 + CRC-64-AVRO fingerprint), or "
      "the\n"
      "Confluent wire format (00 + schema id) when --schema-id gives an id for TYPE.\n"
      "decode accepts both (--framing restricts it), resolves events written with an "
      "older\n"
      "registered schema (or one given with --writer-schema) into the current version,\n"
      "and prints JSON: fragment sets as range lists such as \"0-63,70\". --type makes\n"
      "decode refuse other event types, as a consumer of one topic would; --envelope "
      "wraps\n"
      "the fields with the type and writer schema. A rejected event exits 1 with its\n"
      "reason code (DECODE_ERROR, UNKNOWN_SCHEMA, INVALID_FIELD, PATH_ESCAPE).\n");
}

/* Reads all of f into a malloc'd buffer (caller frees). */
static sf_code slurp(FILE *f, const char *what, uint8_t **out, size_t *len, sf_err *err) {
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  if (!buf) return sf_err_set(err, SF_ENOMEM, "out of memory reading %s", what);
  for (;;) {
    if (n == cap) {
      if (cap >= MAX_INPUT) {
        free(buf);
        return sf_err_set(err, SF_ELIMIT, "%s is larger than %u MiB", what,
                          MAX_INPUT >> 20);
      }
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        return sf_err_set(err, SF_ENOMEM, "out of memory reading %s", what);
      }
      buf = nb;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    int e = errno;
    free(buf);
    return sf_err_errno(err, SF_EIO, e, "cannot read %s", what);
  }
  *out = buf;
  *len = n;
  return SF_OK;
}

typedef struct {
  const char *sub;
  bool have_type, canonical, fingerprint, no_validate, envelope, compact;
  sf_event_type type;
  sf_framing framing;
  sf_schema_set *set;
} opts;

static int fail_reason(const char *sub, sf_event_reason reason, const sf_err *err) {
  if (reason == SF_REASON_NONE) return cli_fail(sub, err);
  fprintf(stderr, "segforge %s: %s: %s\n", sub, sf_event_reason_name(reason), err->msg);
  return 1;
}

static int do_encode(opts *o) {
  sf_err err = {0};
  uint8_t *in = NULL, *out = NULL;
  size_t n = 0, len = 0;
  sf_event ev = {0};
  sf_event_encoder *enc = NULL;
  sf_event_reason reason = SF_REASON_NONE;
  int status = 1;
  if (slurp(stdin, "stdin", &in, &n, &err)) goto done;
  json_error_t je;
  json_t *j = json_loadb((const char *)in, n, 0, &je);
  if (!j) {
    sf_err_set(&err, SF_EINVAL, "stdin is not JSON: line %d column %d: %s", je.line,
               je.column, je.text);
    goto done;
  }
  sf_code rc = sf_event_from_json(o->type, j, &ev, &err);
  json_decref(j);
  if (rc) goto done;
  /* Validated here too (the encoder would refuse the same) for the reason code. */
  if (!o->no_validate && sf_event_validate(&ev, &reason, &err)) goto done;
  if (sf_event_encoder_new(o->set, o->framing, o->no_validate ? SF_ENCODE_NO_VALIDATE : 0,
                           &enc, &err) ||
      sf_event_encode(enc, &ev, &out, &len, &err))
    goto done;
  if (fwrite(out, 1, len, stdout) != len || fflush(stdout)) {
    sf_err_errno(&err, SF_EIO, errno, "cannot write the event to stdout");
    goto done;
  }
  status = 0;
done:
  if (status) status = fail_reason("events encode", reason, &err);
  sf_event_encoder_free(enc);
  sf_event_clear(&ev);
  free(in);
  free(out);
  return status;
}

static int do_decode(opts *o) {
  sf_err err = {0};
  uint8_t *in = NULL;
  size_t n = 0;
  sf_event ev = {0};
  sf_event_reason reason = SF_REASON_NONE;
  sf_event_decoder *dec = NULL;
  json_t *j = NULL;
  int status = 1;
  unsigned flags = o->no_validate ? SF_DECODE_NO_VALIDATE : 0;
  if (slurp(stdin, "stdin", &in, &n, &err) ||
      sf_event_decoder_new(o->set, o->framing, flags, &dec, &err))
    goto done;
  if (sf_event_decode(dec, in, n, &ev, &reason, &err)) goto done;
  if (o->have_type && ev.type != o->type) {
    reason = SF_REASON_UNKNOWN_SCHEMA;
    sf_err_set(&err, SF_EDECODE, "the event is a %s; --type asked for %s",
               sf_event_type_name(ev.type), sf_event_type_name(o->type));
    goto done;
  }
  j = sf_event_to_json(&ev);
  if (j && o->envelope) {
    const sf_schema *s = sf_event_decoder_last_schema(dec);
    char fp[20];
    snprintf(fp, sizeof fp, "%016" PRIx64, s->fingerprint);
    json_t *w = json_pack("{s:s, s:s, s:s, s:b, s:o}", "type",
                          sf_event_type_name(ev.type), "writer_schema", s->origin,
                          "fingerprint", fp, "current", s->current, "event", j);
    j = w;
  }
  if (!j) {
    sf_err_set(&err, SF_ENOMEM, "out of memory formatting the event");
    goto done;
  }
  size_t flags_out = JSON_PRESERVE_ORDER | (o->compact ? JSON_COMPACT : JSON_INDENT(2));
  if (json_dumpf(j, stdout, flags_out) || fputc('\n', stdout) == EOF || fflush(stdout)) {
    sf_err_errno(&err, SF_EIO, errno, "cannot write JSON to stdout");
    goto done;
  }
  status = 0;
done:
  if (status) status = fail_reason("events decode", reason, &err);
  json_decref(j);
  sf_event_clear(&ev);
  sf_event_decoder_free(dec);
  free(in);
  return status;
}

static int do_schema(opts *o) {
  if (!o->have_type) return cli_usage("events schema", "--type TYPE is required");
  const sf_schema *s = sf_schema_current(o->set, o->type);
  if (o->fingerprint)
    printf("%016" PRIx64 "\n", s->fingerprint);
  else
    printf("%s\n", o->canonical ? s->canonical : s->json);
  return fflush(stdout) ? 1 : 0;
}

static sf_code add_writer_schema(sf_schema_set *set, const char *path, sf_err *err) {
  FILE *f;
  sf_code rc = sf_fs_fopen_input(path, &f, NULL, err);
  if (rc) {
    sf_err_prefix(err, "--writer-schema");
    return rc;
  }
  uint8_t *text;
  size_t n;
  rc = slurp(f, path, &text, &n, err);
  fclose(f);
  if (rc) return rc;
  const char *base = strrchr(path, '/');
  rc = sf_schema_set_add(set, (const char *)text, n, base ? base + 1 : path, NULL, err);
  free(text);
  return rc;
}

int cli_cmd_events(int argc, char **argv) {
  static const struct option longopts[] = {{"type", required_argument, 0, 't'},
                                           {"framing", required_argument, 0, 'f'},
                                           {"schema-id", required_argument, 0, 'i'},
                                           {"writer-schema", required_argument, 0, 'w'},
                                           {"no-validate", no_argument, 0, 'n'},
                                           {"envelope", no_argument, 0, 'e'},
                                           {"compact", no_argument, 0, 'c'},
                                           {"canonical", no_argument, 0, 'C'},
                                           {"fingerprint", no_argument, 0, 'F'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    help();
    return argc < 2 ? 2 : 0;
  }
  opts o = {.sub = argv[1]};
  if (strcmp(o.sub, "encode") && strcmp(o.sub, "decode") && strcmp(o.sub, "schema"))
    return cli_usage("events", "unknown subcommand '%s': use encode, decode or schema",
                     o.sub);
  sf_err err = {0};
  if (sf_schema_set_new(&o.set, &err)) return cli_fail("events", &err);
  int status = -1, c;
  optind = 1;
  argc--, argv++; /* getopt sees the subcommand as argv[0] */
  while (status < 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 't':
        rc = sf_event_type_parse(optarg, &o.type, &err), o.have_type = true;
        break;
      case 'f':
        rc = sf_framing_parse(optarg, &o.framing, &err);
        break;
      case 'i':
        rc = sf_schema_set_parse_id(o.set, optarg, &err);
        break;
      case 'w':
        rc = add_writer_schema(o.set, optarg, &err);
        break;
      case 'n':
        o.no_validate = true;
        break;
      case 'e':
        o.envelope = true;
        break;
      case 'c':
        o.compact = true;
        break;
      case 'C':
        o.canonical = true;
        break;
      case 'F':
        o.fingerprint = true;
        break;
      case 'h':
        help();
        status = 0;
        break;
      default:
        status = cli_usage("events", "unknown option (see segforge events --help)");
    }
    if (rc)
      status =
          rc == SF_EIO ? cli_fail("events", &err) : cli_usage("events", "%s", err.msg);
  }
  if (status < 0 && optind < argc)
    status = cli_usage("events", "unexpected argument '%s'", argv[optind]);
  if (status < 0) {
    if (!strcmp(o.sub, "encode"))
      status = o.have_type ? do_encode(&o)
                           : cli_usage("events encode", "--type TYPE is required");
    else if (!strcmp(o.sub, "decode"))
      status = do_decode(&o);
    else
      status = do_schema(&o);
  }
  sf_schema_set_free(o.set);
  return status;
}
