/*
 * cmd_status.c - `segforge status --metrics-addr HOST:PORT [--json]`: the
 * open jobs of a running `segforge serve`, read from its GET /jobs, as a
 * table (or the document itself with --json). A tiny HTTP/1.0 client: the
 * address is the operator's own processor, the answer a bounded JSON
 * document.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli/cli.h"

/* The largest /jobs answer read (a processor with very many open jobs). */
#define MAX_BODY (64u << 20)
#define TIMEOUT_MS 10000

static void help(void) {
  printf(
      "usage: segforge status --metrics-addr HOST:PORT [--json]\n\n"
      "Lists the open jobs of the `segforge serve` whose --metrics-addr is HOST:PORT\n"
      "(its GET /jobs): dataset, staging id, state (waiting for shards, queued,\n"
      "building, committing, failed, held), the fragments still missing, shards seen\n"
      "and age. --json prints the document as served. Exit status 0, or 1 when the\n"
      "processor cannot be reached or does not answer.\n");
}

/* GET path from addr ("HOST:PORT", "[V6]:PORT"): the body (malloc'd) and
 * the HTTP status. */
static sf_code http_get(const char *addr, const char *path, char **body, int *status,
                        sf_err *err) {
  char host[256], port[16];
  const char *colon = strrchr(addr, ':');
  const char *h = addr;
  size_t hl = colon ? (size_t)(colon - addr) : 0;
  if (*h == '[' && hl >= 2 && addr[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (!colon || !hl || hl >= sizeof host || !colon[1] ||
      strlen(colon + 1) >= sizeof port ||
      strspn(colon + 1, "0123456789") != strlen(colon + 1))
    return sf_err_set(err, SF_EINVAL,
                      "--metrics-addr '%s': expected HOST:PORT, the --metrics-addr of "
                      "the serve process (e.g. 127.0.0.1:9464)",
                      addr);
  memcpy(host, h, hl);
  host[hl] = '\0';
  snprintf(port, sizeof port, "%s", colon + 1);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai) return sf_err_set(err, SF_EINVAL, "%s: %s", addr, gai_strerror(gai));
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* connect waits TIMEOUT_MS at most too (Linux bounds it by the send
   * timeout): an address that drops the SYN would hold it for minutes. */
  struct timeval tv = {.tv_sec = TIMEOUT_MS / 1000};
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen)) {
    int e = errno;
    if (fd >= 0 && (e == EINPROGRESS || e == EAGAIN)) {
      close(fd);
      freeaddrinfo(res);
      return sf_err_set(err, SF_EIO,
                        "cannot reach segforge serve at %s: no connection within %d s "
                        "(is the address right, or does a firewall drop it?)",
                        addr, TIMEOUT_MS / 1000);
    }
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return sf_err_errno(err, SF_EIO, e,
                        "cannot reach segforge serve at %s (is it running with "
                        "--metrics-addr %s?)",
                        addr, addr);
  }
  freeaddrinfo(res);
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
  if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
    close(fd);
    return sf_err_set(err, SF_EIO, "%s: cannot send the request", addr);
  }
  size_t len = 0, cap = 65536;
  char *buf = malloc(cap + 1);
  sf_code rc = buf ? SF_OK : sf_err_set(err, SF_ENOMEM, "out of memory");
  while (!rc) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, TIMEOUT_MS) <= 0) {
      rc = sf_err_set(err, SF_EIO, "%s: no answer within %d s", addr, TIMEOUT_MS / 1000);
      break;
    }
    if (len == cap) {
      char *nb = cap < MAX_BODY ? realloc(buf, 2 * cap + 1) : NULL;
      if (!nb) {
        rc = sf_err_set(err, SF_ELIMIT, "%s: answer over %u bytes", addr, MAX_BODY);
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t got = read(fd, buf + len, cap - len);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) rc = sf_err_errno(err, SF_EIO, errno, "%s: read", addr);
    if (got <= 0) break;
    len += (size_t)got;
  }
  close(fd);
  if (rc) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  char *sep = strstr(buf, "\r\n\r\n");
  if (strncmp(buf, "HTTP/1.", 7) || !sep || sscanf(buf + 8, " %d", status) != 1) {
    free(buf);
    return sf_err_set(err, SF_EDECODE, "%s: not an HTTP answer", addr);
  }
  memmove(buf, sep + 4, len - (size_t)(sep + 4 - buf) + 1);
  *body = buf;
  return SF_OK;
}

static const char *str(json_t *o, const char *key, const char *def) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : def;
}

static void print_table(json_t *doc) {
  json_t *jobs = json_object_get(doc, "jobs");
  printf("group %s, topic %s, %lld partition(s) assigned, %zu open job(s)\n",
         str(doc, "group", "?"), str(doc, "topic", "?"),
         (long long)json_integer_value(json_object_get(doc, "partitions_assigned")),
         json_array_size(jobs));
  if (!json_array_size(jobs)) return;
  printf("%-10s %-20s %-14s %-10s %6s %8s  %s\n", "STATE", "STAGING_ID", "INDEX", "AGE",
         "SHARDS", "EVENTS", "MISSING / DATASET");
  size_t i;
  json_t *j;
  json_array_foreach(jobs, i, j) {
    char age[32];
    double a = json_number_value(json_object_get(j, "age_seconds"));
    if (a < 120)
      snprintf(age, sizeof age, "%.1fs", a);
    else if (a < 7200)
      snprintf(age, sizeof age, "%.1fm", a / 60);
    else
      snprintf(age, sizeof age, "%.1fh", a / 3600);
    const char *miss = str(j, "missing_fragments", "?");
    printf("%-10s %-20s %-14s %-10s %6lld %8lld  %s\n", str(j, "state", "?"),
           str(j, "staging_id", "?"), str(j, "index_name", "-"), age,
           (long long)json_integer_value(json_object_get(j, "shards_seen")),
           (long long)json_integer_value(json_object_get(j, "events")),
           *miss ? miss : "(none)");
    printf("%-10s %s\n", "", str(j, "dataset", "?"));
    if (json_object_get(j, "error"))
      printf("%-10s held: %s (attempts %lld)\n", "", str(j, "error", ""),
             (long long)json_integer_value(json_object_get(j, "attempts")));
    if (json_object_get(j, "reason"))
      printf("%-10s failed: %s: %s\n", "", str(j, "reason", ""), str(j, "message", ""));
  }
}

int cli_cmd_status(int argc, char **argv) {
  const struct option opts[] = {{"metrics-addr", required_argument, 0, 'm'},
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *addr = NULL;
  int c, as_json = 0;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("status", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'm':
        addr = optarg;
        break;
      case 'j':
        as_json = 1;
        break;
      case 'h':
        help();
        return 0;
      default:
        return cli_usage("status", "unknown option");
    }
  }
  if (optind < argc) return cli_usage("status", "unexpected argument '%s'", argv[optind]);
  if (!addr)
    return cli_usage("status",
                     "--metrics-addr HOST:PORT is required: the --metrics-addr of the "
                     "segforge serve to ask");
  sf_err err = {0};
  char *body = NULL;
  int status = 0;
  if (http_get(addr, "/jobs", &body, &status, &err)) return cli_fail("status", &err);
  if (status != 200) {
    sf_err_set(&err, SF_EIO, "%s answered %d: %s", addr, status, body);
    free(body);
    return cli_fail("status", &err);
  }
  json_error_t je;
  json_t *doc = json_loads(body, 0, &je);
  if (!doc || !json_is_array(json_object_get(doc, "jobs"))) {
    sf_err_set(&err, SF_EDECODE, "%s/jobs: not a jobs document: %s", addr,
               doc ? "no jobs array" : je.text);
    json_decref(doc);
    free(body);
    return cli_fail("status", &err);
  }
  if (as_json)
    fputs(body, stdout);
  else
    print_table(doc);
  json_decref(doc);
  free(body);
  return 0;
}
