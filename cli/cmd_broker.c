/*
 * cmd_broker.c - `segforge broker`: the embedded Kafka broker alone, for
 * development and tests. Prints its bootstrap address as the only line on
 * stdout (flushed, so a script can read it from a pipe) and runs until
 * SIGINT or SIGTERM.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kafka/broker.h"

static void help(void) {
  printf(
      "usage: segforge broker [--partitions N] [--topic NAME ...] [--nodes N]\n\n"
      "Runs an embedded Kafka cluster (librdkafka's mock cluster) on loopback and\n"
      "prints its bootstrap address on stdout, then serves until SIGINT/SIGTERM.\n"
      "Creates segforge.shards.staged, segforge.segments.committed,\n"
      "segforge.shards.rejected and segforge.segments.compacted, plus each --topic,\n"
      "with N partitions (default 3).\n"
      "--nodes runs N brokers (default 1), replicating each partition on all.\n"
      "Everything is in memory, and each partition keeps only its newest ~5 MiB;\n"
      "see docs/broker.md. Production uses a real Kafka cluster.\n\n"
      "In a script:  coproc segforge broker; read -r B <&\"${COPROC[0]}\"\n");
}

int cli_cmd_broker(int argc, char **argv) {
  const struct option opts[] = {CLI_OPT(CLI_FLAG_PARTITIONS),
                                {"topic", required_argument, 0, 't'},
                                CLI_OPT(CLI_FLAG_NODES),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  uint64_t partitions = 3, nodes = 1;
  const char *extra[SF_BROKER_MAX_TOPICS];
  size_t nextra = 0;
  sf_err err = {0};
  int c;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("broker", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case CLI_FLAG_PARTITIONS:
      case CLI_FLAG_NODES:
        rc = cli_flag_u64(c, optarg, c == CLI_FLAG_NODES ? &nodes : &partitions, &err);
        break;
      case 't':
        if (nextra + 3 >= SF_BROKER_MAX_TOPICS)
          return cli_usage("broker", "at most %u topics", SF_BROKER_MAX_TOPICS - 3);
        extra[nextra++] = optarg;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("broker", "unknown option");
    }
    if (rc) return cli_usage("broker", "%s", err.msg);
  }
  if (optind < argc) return cli_usage("broker", "unexpected argument '%s'", argv[optind]);

  const char *topics[SF_BROKER_MAX_TOPICS] = {
      "segforge.shards.staged", "segforge.segments.committed", "segforge.shards.rejected",
      "segforge.segments.compacted"};
  size_t nt = 4;
  for (size_t i = 0; i < nextra; i++) {
    size_t j = 0;
    while (j < nt && strcmp(topics[j], extra[i])) j++;
    if (j == nt) topics[nt++] = extra[i]; /* a default named again is no error */
  }

  /* Block the stop signals before librdkafka starts its threads, so that
   * they inherit the mask and sigwait below is the one to receive them. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  sf_broker_opts o = {.nbrokers = (unsigned)nodes,
                      .partitions = (unsigned)partitions,
                      .topics = topics,
                      .ntopics = nt};
  sf_broker *b = NULL;
  if (sf_broker_start_ex(&o, &b, &err)) return cli_fail("broker", &err);
  printf("%s\n", sf_broker_bootstraps(b));
  fflush(stdout);
  fprintf(
      stderr,
      "segforge broker: embedded Kafka on %s (%zu topics x %u partitions, in memory); "
      "Ctrl-C stops it\n",
      sf_broker_bootstraps(b), nt, (unsigned)partitions);
  int sig = 0;
  sigwait(&stop, &sig);
  sf_broker_stop(b);
  fprintf(stderr, "segforge broker: stopped (%s)\n",
          sig == SIGINT ? "SIGINT" : "SIGTERM");
  return 0;
}
