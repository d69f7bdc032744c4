/*
 * kconf.h - Kafka client configuration as string properties, kcat-style.
 *
 * Every option of a Kafka client of segforge is a `key=value` string, so that
 * any librdkafka property (bootstrap.servers, security.protocol, sasl.*,
 * group.id, ...) can come from a file (--config FILE) or the command line
 * (-X key=value) without new code, exactly as kcat does. Properties are kept
 * in the order they were set (a later set of the same key replaces the value
 * in place), because librdkafka applies some properties relative to others.
 *
 * Two namespaces, kept apart:
 *  - keys starting with "segforge." are segforge's own (topics, framing,
 *    schema ids; see SF_KCONF_* below). They are validated by segforge and
 *    never handed to librdkafka, which would reject them;
 *  - every other key is librdkafka's. It is checked against librdkafka as
 *    soon as it is set (unknown key, bad value), so that a mistake is
 *    reported with its origin ("client.conf:12: ...", "-X ...") rather than
 *    later when a client is created.
 *
 * Logging: libraries never print. sf_kconf_build installs the log callback
 * given to sf_kconf_set_logger, or one that drops every line when none was
 * given, so librdkafka writes nothing to stderr on its own. The program sets
 * a logger (and the user turns on librdkafka's `debug=...` with -X) when a
 * person wants to see the client's logs.
 *
 * Threading: an sf_kconf is a plain value. Build it in one thread, then any
 * number of threads may read it (sf_kconf_get, sf_kconf_build) at once.
 */
#ifndef SF_KCONF_H
#define SF_KCONF_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/base/error.h"

/* segforge's own keys (the values shown are the defaults). */
#define SF_KCONF_TOPIC_STAGED "segforge.topic.staged" /* segforge.shards.staged */
#define SF_KCONF_TOPIC_COMMITTED \
  "segforge.topic.committed" /* segforge.segments.committed */
#define SF_KCONF_TOPIC_REJECTED "segforge.topic.rejected" /* segforge.shards.rejected */
#define SF_KCONF_TOPIC_COMPACTED \
  "segforge.topic.compacted" /* segforge.segments.compacted */
/* auto | single | confluent (schemas/schema.h, sf_framing_parse) */
#define SF_KCONF_FRAMING "segforge.framing"
/* Confluent schema ids, comma-separated "Type=id" (e.g. "ShardStaged=17,
 * SegmentsCommitted=18"); see sf_schema_set_parse_id. */
#define SF_KCONF_SCHEMA_IDS "segforge.schema.ids"
/* Milliseconds a publisher waits for a delivery report by default. */
#define SF_KCONF_DELIVERY_TIMEOUT_MS "segforge.delivery.timeout.ms" /* 30000 */
/* serve's --dataset-root, as a comma-separated list of absolute directories
 * (for --config files); the flag's roots are added to these. */
#define SF_KCONF_DATASET_ROOTS "segforge.dataset.roots"

#define SF_TOPIC_STAGED_DEFAULT "segforge.shards.staged"
#define SF_TOPIC_COMMITTED_DEFAULT "segforge.segments.committed"
#define SF_TOPIC_REJECTED_DEFAULT "segforge.shards.rejected"
#define SF_TOPIC_COMPACTED_DEFAULT "segforge.segments.compacted"

/* Bounds on what is accepted from outside. */
#define SF_KCONF_KEY_MAX 256         /* bytes of a key */
#define SF_KCONF_VALUE_MAX 65536     /* bytes of a value (PEM certificates fit) */
#define SF_KCONF_LINE_MAX 70000      /* bytes of a line of a configuration file */
#define SF_KCONF_FILE_MAX (1u << 20) /* bytes of a configuration file */

typedef struct sf_kconf sf_kconf;

/* The signature of librdkafka's log callback (rd_kafka_conf_set_log_cb);
 * `rk` lets the callback reach rd_kafka_name() and rd_kafka_opaque(). */
typedef void (*sf_kconf_log_fn)(const rd_kafka_t *rk, int level, const char *fac,
                                const char *buf);

/* A new, empty configuration; NULL when out of memory. Freed with
 * sf_kconf_free. */
sf_kconf *sf_kconf_new(void);
/* Accepts NULL. */
void sf_kconf_free(sf_kconf *k);
/* A deep copy (NULL when out of memory), freed with sf_kconf_free; callers
 * that add defaults to a configuration they were given work on a copy. */
sf_kconf *sf_kconf_dup(const sf_kconf *k);

/* Sets key to value (both copied). Errors (SF_EINVAL) name the key: an empty
 * or over-long key or value, a control character, an unknown "segforge."
 * key or a bad value for one, and whatever librdkafka says of its own keys
 * (unknown property, invalid value). SF_ENOMEM. On error k is unchanged. */
sf_code sf_kconf_set(sf_kconf *k, const char *key, const char *value, sf_err *err);

/* Parses one "-X" argument, "key=value" (the first '=' splits; the value may
 * contain '=' and may not be empty), and sets it. */
sf_code sf_kconf_parse_arg(sf_kconf *k, const char *arg, sf_err *err);

/* Reads a configuration file: one "key=value" a line; blank lines and lines
 * whose first non-blank character is '#' are skipped; blanks around the key
 * and the value are trimmed (a value is never quoted). The file must be a
 * regular file of at most SF_KCONF_FILE_MAX bytes (SF_EINVAL for a FIFO or a
 * device, SF_ELIMIT for a larger file, both refused before reading) and each
 * line at most SF_KCONF_LINE_MAX bytes. Errors name the file and the line
 * ("client.conf:7: ..."). On error the properties of the lines before the
 * bad one stay set. */
sf_code sf_kconf_load_file(sf_kconf *k, const char *path, sf_err *err);

/* The value set for key (segforge's or librdkafka's), or NULL; the pointer
 * is owned by k and valid until the key is set again or k is freed. */
const char *sf_kconf_get(const sf_kconf *k, const char *key);
/* sf_kconf_get with a default for an unset key. */
const char *sf_kconf_get_or(const sf_kconf *k, const char *key, const char *def);
bool sf_kconf_has(const sf_kconf *k, const char *key);

/* Iteration in the order of first setting: the i-th key and value
 * (i < sf_kconf_count), owned by k. */
size_t sf_kconf_count(const sf_kconf *k);
void sf_kconf_at(const sf_kconf *k, size_t i, const char **key, const char **value);

/* The callback sf_kconf_build installs (NULL: drop every log line). */
void sf_kconf_set_logger(sf_kconf *k, sf_kconf_log_fn fn);

/* A new rd_kafka_conf_t with every librdkafka property of k applied in order
 * and the logger installed; the caller passes it to rd_kafka_new (which
 * takes ownership on success) or frees it with rd_kafka_conf_destroy.
 * On failure returns NULL and writes "<key>: <librdkafka's message>" to
 * errstr (size n), in the style of rd_kafka_conf_set. */
rd_kafka_conf_t *sf_kconf_build(const sf_kconf *k, char *errstr, size_t n);

/* sf_kconf_build reporting through sf_err (SF_EINVAL, SF_ENOMEM). */
sf_code sf_kconf_build_err(const sf_kconf *k, rd_kafka_conf_t **out, sf_err *err);

/* The millisecond value of a segforge key holding a duration (e.g.
 * SF_KCONF_DELIVERY_TIMEOUT_MS), or def when unset. Values were checked
 * when set, so this cannot fail. */
int sf_kconf_get_ms(const sf_kconf *k, const char *key, int def);

#endif
