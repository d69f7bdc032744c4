/*
 * main.c - the segforge program: dispatches to one command per file.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/fault.h"

static const struct {
  const char *name;
  cli_cmd_fn fn;
  const char *help;
} commands[] = {
    {"gen", cli_cmd_gen, "generate clustered vectors, queries and ground truth"},
    {"train", cli_cmd_train, "train the quantizer (IVF centroids, PQ/SQ) from vectors"},
    {"events", cli_cmd_events, "encode and decode events (Avro <-> JSON)"},
    {"stage", cli_cmd_stage, "write a shard for a set of fragments"},
    {"search", cli_cmd_search,
     "k-NN search over shards or segments; recall vs ground truth"},
    {"demo", cli_cmd_demo, "the whole path on generated data"},
    {"finalize", cli_cmd_finalize, "plan + build + commit one job, without a broker"},
    {"plan", cli_cmd_plan, "validate a staging root and print its segment plan"},
    {"build", cli_cmd_build,
     "merge planned shards into segments, bounded and crash safe"},
    {"inspect", cli_cmd_inspect, "describe a shard, segment or quantizer file"},
    {"commit", cli_cmd_commit, "record built segments as a new catalog version"},
    {"gc", cli_cmd_gc, "remove what no kept catalog version needs"},
    {"broker", cli_cmd_broker, "an embedded Kafka broker on loopback, for development"},
    {"serve", cli_cmd_serve,
     "the stream processor: consume ShardStaged, commit, announce"},
    {"compact", cli_cmd_compact,
     "merge an index's small segments until the policy is done"},
    {"status", cli_cmd_status, "the open jobs of a running serve (its /jobs)"},
    {"wait", cli_cmd_wait, "wait until a job is committed; non-zero if it failed"},

};

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: segforge <command> [options]   (segforge <command> --help)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  sf_err err = {0};
  if (sf_fault_check_env(&err)) { /* a misspelt point would never fire */
    fprintf(stderr, "segforge: %s\n", err.msg);
    return 2;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "segforge: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
