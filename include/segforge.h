/*
 * segforge.h - the public C API of segforge: build an IVF vector index from
 * many workers, finalize it into segments, and search it.
 *
 * This is the only header a program needs; it depends on the C standard
 * library alone (the library itself links librdkafka, avro-c, CRoaring,
 * zstd, xxhash and jansson, none of which appears here). Link with
 * `pkg-config --cflags --libs segforge`, or in CMake
 * `find_package(segforge)` and `segforge::segforge`.
 *
 * The path of a build, by task (docs/api.md tells it at length):
 *
 *   coordinator  sf_train               quantizer into a staging root
 *   each worker  sf_shard_writer_*      vectors + row ids -> one shard file
 *                sf_producer_*          announce it (ShardStaged on Kafka)
 *   finalizer    sf_builder_*           plan, build one/all, commit
 *                sf_index_finalize      the same in one call
 *                sf_index_wait_committed  wait for `segforge serve` to do it
 *   searcher     sf_index_open/search   k nearest rows, ids and distances
 *
 * Row ids: a row id is (fragment << 32) | offset within the fragment, as in
 * Lance (SF_ROW_ID below). A shard covers a set of fragments; a finalized
 * job covers exactly its expected fragments.
 *
 * Conventions, for every function below:
 *  - Errors: a function that can fail returns an int status, SF_STATUS_OK
 *    (0) or one of the SF_STATUS_* codes, and fills the caller's sf_error
 *    (which may be NULL) with the same code and one sentence naming what was
 *    wrong and how to fix it. Nothing is ever printed, and the library never
 *    exits the process. The codes are stable across versions.
 *  - Ownership: every function that allocates says who frees. Handles come in
 *    pairs (`_new`/`_open` and `_free`/`_close`), and every `_free` accepts
 *    NULL. Strings the library returns as `char *` are freed with sf_free();
 *    `const char *` results are owned by the handle they came from and live
 *    as long as it. Inputs are borrowed: the library copies what it keeps.
 *  - Threads: the library starts no thread that outlives a call (librdkafka's
 *    own threads, inside an sf_producer, excepted). Handles are used by one
 *    thread at a time unless the function says otherwise; sf_index_search
 *    and sf_producer_publish_shard may be called from any number of threads
 *    at once. There is no global mutable state.
 *  - Options: functions with many knobs take an sf_options, a set of string
 *    properties ("nlist" = "256"), as librdkafka takes its configuration, so
 *    that any binding (the Python package) or file can pass them through.
 *    Each function lists the keys it reads; a key it does not know is refused
 *    with SF_STATUS_INVALID naming it, so a typo never passes silently.
 *
 * Versioning: SF_VERSION_* give the version of this header, sf_version()
 * that of the library loaded at run time. Within one major version the ABI
 * only grows: functions are added, never removed or changed, and the
 * exported symbol list is checked by the tests (include/segforge.abi).
 */
#ifndef SEGFORGE_H
#define SEGFORGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SF_API __attribute__((visibility("default")))
#else
#define SF_API
#endif

/* ---- version -------------------------------------------------------------- */

#define SF_VERSION_MAJOR 1
#define SF_VERSION_MINOR 0
#define SF_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons. */
#define SF_VERSION_NUMBER \
  (SF_VERSION_MAJOR * 10000 + SF_VERSION_MINOR * 100 + SF_VERSION_PATCH)

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
SF_API const char *sf_version(void);
/* The library's SF_VERSION_NUMBER: compare with the header's to detect a
 * library older than the header a program was built with. */
SF_API int sf_version_number(void);

/* ---- errors --------------------------------------------------------------- */

/* Status codes. Their values never change; new ones may be added. */
enum {
  SF_STATUS_OK = 0,
  SF_STATUS_INVALID = 1,     /* a bad argument, option or input value */
  SF_STATUS_IO = 2,          /* an operating-system I/O call or a delivery failed */
  SF_STATUS_NOMEM = 3,       /* an allocation failed */
  SF_STATUS_CORRUPT = 4,     /* a file's bytes break its format */
  SF_STATUS_FORMAT = 5,      /* a file of another kind or an unsupported version */
  SF_STATUS_CHECKSUM = 6,    /* a quantizer checksum does not match */
  SF_STATUS_MISMATCH = 7,    /* parameters differ (type, metric, dim, nlist) */
  SF_STATUS_NOT_FOUND = 8,   /* a file, index, job or version does not exist */
  SF_STATUS_EXISTS = 9,      /* a name that must be new already exists */
  SF_STATUS_OVERLAP = 10,    /* fragments present in two shards or segments */
  SF_STATUS_INCOMPLETE = 11, /* shards do not cover the expected fragments */
  SF_STATUS_CONFLICT = 12,   /* a concurrent writer won a race */
  SF_STATUS_CANCELED = 13,   /* work stopped because another part failed */
  SF_STATUS_DECODE = 14,     /* an event field breaks its rule */
  SF_STATUS_LIMIT = 15,      /* a size or count beyond a sane limit */
  SF_STATUS_TIMEOUT = 64     /* a wait ran out of time (sf_index_wait_committed) */
};

#define SF_ERROR_MESSAGE_MAX 512

/* The error out-parameter of every fallible function: caller storage, e.g.
 * `sf_error err = {0};`. On failure code is the returned status and message
 * a NUL-terminated sentence; on success it is left as it was. */
typedef struct sf_error {
  int code;
  char message[SF_ERROR_MESSAGE_MAX];
} sf_error;

/* A stable upper-case name for a status ("INVALID", "NOT_FOUND", ...), or
 * "UNKNOWN"; static storage. */
SF_API const char *sf_status_name(int code);

/* Frees memory the library returned as `char *` (and only that); accepts
 * NULL. */
SF_API void sf_free(void *p);

/* ---- row ids --------------------------------------------------------------- */

#define SF_ROW_ID(fragment, offset) (((uint64_t)(fragment) << 32) | (uint32_t)(offset))
#define SF_ROW_ID_FRAGMENT(id) ((uint32_t)((uint64_t)(id) >> 32))
#define SF_ROW_ID_OFFSET(id) ((uint32_t)(id))
/* The id reported for a result slot that no row fills (fewer than k rows). */
#define SF_NO_ROW_ID UINT64_MAX

/* ---- options --------------------------------------------------------------- */

/* A set of string properties. Not thread-safe while being set; once built,
 * any number of threads may pass it to the functions below at once (they
 * only read it). */
typedef struct sf_options sf_options;

/* A new empty set; NULL when out of memory. Freed by sf_options_free. */
SF_API sf_options *sf_options_new(void);
/* Accepts NULL. */
SF_API void sf_options_free(sf_options *o);
/* Sets key to value (both copied; a later set of the same key replaces it).
 * Only the key's syntax is checked here (printable ASCII, 1..128 bytes);
 * the functions that read an option check its value and name it when it is
 * wrong. Errors: SF_STATUS_INVALID, SF_STATUS_NOMEM. */
SF_API int sf_options_set(sf_options *o, const char *key, const char *value,
                          sf_error *err);
/* The value of key, or NULL when not set (owned by o, valid until the key is
 * set again or o is freed). */
SF_API const char *sf_options_get(const sf_options *o, const char *key);

/* Sizes in options ("target_segment_bytes") accept a plain count of bytes
 * or a count with a binary suffix K, M, G or T ("256M" = 256 MiB). Booleans
 * accept 1/0, true/false, yes/no. */

/* ---- paths ----------------------------------------------------------------- */

/* The staging root of a job: "<dataset>/_indices/_staging/<staging_id>",
 * where its quantizer and shards live. dataset is a directory or a file://
 * URI (it need not exist yet); staging_id is 1..255 bytes, no '/', not "."
 * or "..". *out is malloc'd: the caller frees it with sf_free. */
SF_API int sf_staging_root(const char *dataset, const char *staging_id, char **out,
                           sf_error *err);

/* ---- coordinator: training ------------------------------------------------- */

/* Trains the quantizer every shard of a job is encoded against, on n rows of
 * dim floats (row-major, n * dim floats, finite), and writes it atomically to
 * <staging_root>/quantizer; staging_root is created with its parents when
 * missing. An existing quantizer there is replaced: train before any shard
 * is staged. Training is deterministic for a seed and any thread count.
 *
 * Options read (opts may be NULL only when all defaults do):
 *   index_type      IVF_FLAT | IVF_SQ | IVF_PQ            (default IVF_FLAT)
 *   metric          L2 | COSINE | DOT                      (default L2)
 *   nlist           partitions, 1..min(n, 1048576)        (required)
 *   pq_m            IVF_PQ sub-quantizers, divides dim     (required for IVF_PQ)
 *   seed            training seed                          (default 1)
 *   max_train_rows  sample cap; 0 = max(256 * nlist, 65536 for PQ) (default 0)
 *   kmeans_iters    Lloyd iterations                       (default 20)
 *   threads         training threads; 0 = online cores     (default 0)
 * Errors: SF_STATUS_INVALID (a value, NaN or infinity in the input naming
 * the row, too few rows), SF_STATUS_IO, SF_STATUS_NOMEM. Blocks; reentrant. */
SF_API int sf_train(const float *vectors, uint64_t n, uint32_t dim,
                    const sf_options *opts, const char *staging_root, sf_error *err);

/* ---- worker: the shard writer ---------------------------------------------- */

/* Writes one shard, <staging_root>/<shard_id>.sfshard, from vectors and row
 * ids held in memory, encoded with the root's quantizer. Rows may come in
 * any order over any number of add calls; they are encoded as they come and
 * held as codes (rows x (code size + 12) bytes: IVF_FLAT 4 * dim, IVF_SQ dim,
 * IVF_PQ pq_m bytes of code per row) until sf_shard_writer_finish sorts them
 * and writes the file atomically (temporary name, fsync, rename). Nothing
 * appears under the shard's name before finish succeeds.
 *
 * One thread at a time per writer; any number of writers (in any number of
 * processes) may write different shards of one root at once. */
typedef struct sf_shard_writer sf_shard_writer;

/* Opens a writer. shard_id: 1..128 characters of [A-Za-z0-9._-], not
 * starting with '.'. fragments: the fragments the shard declares, as a
 * range list ("0-3,7"); every row id added must lie in one of them
 * (SF_STATUS_INVALID naming the row id otherwise), and the shard covers all
 * of them even those without rows. NULL: the shard covers the fragments of
 * the row ids added (at least one row then). The quantizer is loaded and
 * checked here (SF_STATUS_NOT_FOUND, SF_STATUS_CORRUPT naming the file).
 *
 * Options read (opts may be NULL):
 *   exclusive   1: never replace an existing shard of this id
 *               (SF_STATUS_EXISTS, here and again at finish); 0: replace it,
 *               as the retry of the same worker does            (default 1)
 * *out is freed by sf_shard_writer_free. */
SF_API int sf_shard_writer_open(const char *staging_root, const char *shard_id,
                                const char *fragments, const sf_options *opts,
                                sf_shard_writer **out, sf_error *err);

/* Adds n rows: vectors is n * dim floats, row-major; row_ids n row ids.
 * dim must be the quantizer's (SF_STATUS_MISMATCH). Refused with
 * SF_STATUS_INVALID, naming the row: a NaN or infinite value, or a row id
 * outside the declared fragments. A refused call adds nothing: the writer
 * is as it was and may go on. Duplicate row ids (within or across calls) are found
 * by finish. Both arrays are borrowed for the call only. */
SF_API int sf_shard_writer_add(sf_shard_writer *w, const float *vectors,
                               const uint64_t *row_ids, uint64_t n, uint32_t dim,
                               sf_error *err);

/* Writes the shard: sorts each partition's rows by row id, refuses a
 * duplicated row id (SF_STATUS_INVALID naming it), writes and renames the
 * file. The sort takes 24 bytes a row more, for the call only. After success the getters
 * below describe it; after failure nothing was written under the shard's name and the
 * writer may only be freed. */
SF_API int sf_shard_writer_finish(sf_shard_writer *w, sf_error *err);

/* Discards an unfinished shard and frees w; accepts NULL. */
SF_API void sf_shard_writer_free(sf_shard_writer *w);

/* Rows added so far. */
SF_API uint64_t sf_shard_writer_rows(const sf_shard_writer *w);
/* The vector dimension the writer takes (the quantizer's). */
SF_API uint32_t sf_shard_writer_dim(const sf_shard_writer *w);
/* After finish: the shard file's absolute path (owned by w) and its size;
 * NULL and 0 before. */
SF_API const char *sf_shard_writer_path(const sf_shard_writer *w);
SF_API uint64_t sf_shard_writer_bytes(const sf_shard_writer *w);
/* The fragments the shard covers (declared, or after finish those of its
 * rows) as a range list; malloc'd, freed with sf_free; NULL when none yet
 * or out of memory. */
SF_API char *sf_shard_writer_fragments(const sf_shard_writer *w);

/* ---- worker: Arrow input --------------------------------------------------
 * The Arrow C Data Interface, from the public specification
 * (https://arrow.apache.org/docs/format/CDataInterface.html), so that
 * vectors held by any Arrow implementation (pyarrow, arrow-rs, nanoarrow,
 * DuckDB, ...) reach the writer without a copy and without a dependency on
 * Arrow. The guard lets a program include Arrow's own definition first. */
#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
  const char *format;
  const char *name;
  const char *metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema **children;
  struct ArrowSchema *dictionary;
  void (*release)(struct ArrowSchema *);
  void *private_data;
};

struct ArrowArray {
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void **buffers;
  struct ArrowArray **children;
  struct ArrowArray *dictionary;
  void (*release)(struct ArrowArray *);
  void *private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

/* Adds the rows of an Arrow struct array (format "+s") with a vector child
 * of type FixedSizeList<float32>[dim] (format "+w:<dim>" whose child is
 * "f") and a row id child of type uint64 ("L"). vector_field and
 * rowid_field name the children; NULL picks the only child of that type
 * (SF_STATUS_INVALID when there are none or several). Offsets are honoured
 * at every level (a sliced array reads from its offset). A null anywhere -
 * a struct, vector, element or row id slot whose validity bit is 0 - is
 * refused with SF_STATUS_INVALID naming the column and the row; a NULL
 * validity buffer means "no nulls", as the specification says. Wrong
 * formats are refused naming the column, the format found and the one
 * wanted. Values are read in place, so the values buffers must be aligned
 * to their type (4 bytes for float32, 8 for uint64; SF_STATUS_INVALID
 * otherwise), and lengths and offsets whose sums or products overflow are
 * refused. The arrays are borrowed: the caller still owns and releases
 * them. Otherwise as sf_shard_writer_add. */
SF_API int sf_shard_writer_add_arrow(sf_shard_writer *w, const struct ArrowSchema *schema,
                                     const struct ArrowArray *array,
                                     const char *vector_field, const char *rowid_field,
                                     sf_error *err);

/* The same from two separate arrays of equal length: a
 * FixedSizeList<float32>[dim] array and a uint64 array. */
SF_API int sf_shard_writer_add_arrow_columns(sf_shard_writer *w,
                                             const struct ArrowSchema *vectors_schema,
                                             const struct ArrowArray *vectors,
                                             const struct ArrowSchema *row_ids_schema,
                                             const struct ArrowArray *row_ids,
                                             sf_error *err);

/* ---- worker: announcing a shard on Kafka ----------------------------------- */

/* A Kafka producer for ShardStaged events. Any number of threads may
 * publish through one producer at once; each call waits for its own
 * acknowledgement. librdkafka runs its own threads inside it, started by
 * sf_producer_new and joined by sf_producer_free. */
typedef struct sf_producer sf_producer;

/* Creates a producer from n librdkafka properties (keys[i] = values[i],
 * applied in order; bootstrap.servers is required), e.g. {"bootstrap.servers",
 * "kafka1:9092"}, {"security.protocol", "ssl"}. Keys "segforge.*" are
 * segforge's own (topics, framing; docs/events.md). The producer is
 * idempotent with acks=all and keys events by staging id with the
 * murmur2_random partitioner, like Java clients. Arrays are borrowed.
 * Errors: SF_STATUS_INVALID (a property, with librdkafka's message and the
 * key), SF_STATUS_NOMEM. *out is freed by sf_producer_free. */
SF_API int sf_producer_new(const char *const *keys, const char *const *values, size_t n,
                           sf_producer **out, sf_error *err);

/* Waits up to timeout_ms for events still in flight, then frees p; accepts
 * NULL. Returns the number of events that were not confirmed (0: all). */
SF_API int sf_producer_free(sf_producer *p, int timeout_ms);

/* Where a published event went. event_id is NUL-terminated. */
typedef struct sf_delivery_report {
  int32_t partition;
  int64_t offset;
  char event_id[256];
} sf_delivery_report;

/* Announces the shard file shard_path (inside the staging root of dataset
 * and staging_id) with a ShardStaged event, and waits up to timeout_ms
 * (<= 0: 30 s) for the broker's acknowledgement. Everything about the shard
 * (type, metric, dim, partitions, quantizer checksum, fragments, rows,
 * bytes) is read from the file, so the event cannot disagree with it.
 *
 * Options read (required unless a default is given):
 *   dataset               the dataset directory or file:// URI
 *   index                 the logical index name
 *   column                the vector column
 *   staging_id            the job
 *   expected_fragments    the job's fragments, a range list ("0-9")
 *   shard_id              default: the file name without ".sfshard"
 *   target_segment_bytes  a per-job segment budget (size)   (default none)
 *   topic                 default: the producer's ShardStaged topic
 *   event_id              default: derived from the content, so that a
 *                         retry sends the same id
 * report may be NULL. SF_STATUS_OK only when the broker confirmed the
 * event. SF_STATUS_IO: not confirmed (failed, named, or outcome unknown);
 * publishing again is safe (same event_id). SF_STATUS_DECODE naming the
 * event field that breaks its rule (e.g. fragments outside
 * expected_fragments); SF_STATUS_INVALID for a file outside the staging
 * root. Thread-safe. */
SF_API int sf_producer_publish_shard(sf_producer *p, const char *shard_path,
                                     const sf_options *event, int timeout_ms,
                                     sf_delivery_report *report, sf_error *err);

/* ---- finalizer: the segment builder ----------------------------------------
 * After Lance's IndexSegmentBuilder (PR #6224): plan which shards of a job
 * merge into which segment, inspect the plan, build segments one at a time
 * (possibly from several threads or processes: segment ids and contents are
 * deterministic) or all at once bounded by max_concurrency, then commit them
 * as one new catalog version. Every step is idempotent: a segment already
 * built (by this handle, another process or a crashed run) is checked and
 * reused, and committing a job already committed is a no-op. */
typedef struct sf_builder sf_builder;

/* Creates a builder for job staging_id of index `index` (column `column`)
 * of dataset (a directory or file:// URI that exists).
 *
 * Options read (opts may be NULL):
 *   index_type            the type the index must be: IVF_FLAT | IVF_SQ |
 *                         IVF_PQ; plan refuses shards of another type
 *                         (SF_STATUS_MISMATCH)          (default: any)
 *   target_segment_bytes  segment budget (size); 0 = one segment per shard
 *                                                       (default 0)
 *   max_concurrency       segment builds at once in build_all (>= 1)
 *                                                       (default 1)
 *   expected_fragments    the shards must cover exactly this range list
 *                         (SF_STATUS_INCOMPLETE listing what is missing)
 *                                                       (default: unchecked)
 *   replace               1: the job's segments replace the committed
 *                         segments whose fragments they cover  (default 0)
 * *out is freed by sf_builder_free. */
SF_API int sf_builder_new(const char *dataset, const char *index, const char *column,
                          const char *staging_id, const sf_options *opts,
                          sf_builder **out, sf_error *err);

/* Frees b; accepts NULL. Segments built but not committed stay on disk,
 * where a later builder of the same job reuses them (or gc removes them). */
SF_API void sf_builder_free(sf_builder *b);

/* Reads the staging root (its quantizer and every *.sfshard), validates the
 * job as a whole (parameters, overlaps, coverage, requested type) and plans
 * it; deterministic for the same shards. Planning again replaces the
 * previous plan and forgets what was built under it. From then on, gc keeps
 * the planned segment files until the builder is freed. */
SF_API int sf_builder_plan(sf_builder *b, sf_error *err);

/* The plan (0 / NULL before sf_builder_plan). i < num_segments;
 * j < sf_builder_segment_num_shards(b, i). Strings are owned by b and live
 * until the next plan or free. */
SF_API size_t sf_builder_num_segments(const sf_builder *b);
SF_API const char *sf_builder_segment_id(const sf_builder *b, size_t i);
SF_API uint64_t sf_builder_segment_bytes(const sf_builder *b, size_t i);
SF_API uint64_t sf_builder_segment_rows(const sf_builder *b, size_t i);
SF_API size_t sf_builder_segment_num_shards(const sf_builder *b, size_t i);
SF_API const char *sf_builder_segment_shard(const sf_builder *b, size_t i, size_t j);
/* Range list of segment i's fragments; malloc'd, freed with sf_free. */
SF_API char *sf_builder_segment_fragments(const sf_builder *b, size_t i);
/* 1 when segment i is built (by this handle), else 0. */
SF_API int sf_builder_segment_built(const sf_builder *b, size_t i);
/* The whole plan as JSON (as `segforge plan --json` prints it); malloc'd,
 * freed with sf_free; NULL before plan or when out of memory. */
SF_API char *sf_builder_plan_json(const sf_builder *b);

/* Builds segment i (or reuses it when a valid file is there already).
 * Unlike the other functions of a builder, it may be called from several
 * threads at once for different segments. SF_STATUS_INVALID before a plan
 * or for i out of range. */
SF_API int sf_builder_build(sf_builder *b, size_t i, sf_error *err);

/* Builds every segment not built yet, at most max_concurrency at once
 * (threads started and joined within the call). The first failure stops
 * the others between partitions and is returned. */
SF_API int sf_builder_build_all(sf_builder *b, sf_error *err);

/* Commits the plan's segments as one new catalog version, building (or
 * reusing) first any segment not built by this handle. *version (may be
 * NULL) receives the version that holds the job; *already (may be NULL) 1
 * when the job was committed before and nothing was written. Refusals name
 * what is wrong: SF_STATUS_OVERLAP, SF_STATUS_MISMATCH, SF_STATUS_CONFLICT,
 * SF_STATUS_CHECKSUM. */
SF_API int sf_builder_commit(sf_builder *b, uint64_t *version, int *already,
                             sf_error *err);

/* plan + build all + commit of one job in one call (what `segforge
 * finalize` does), with the options of sf_builder_new. A job already
 * committed returns its version without building anything. */
SF_API int sf_index_finalize(const char *dataset, const char *index, const char *column,
                             const char *staging_id, const sf_options *opts,
                             uint64_t *version, sf_error *err);

/* Waits until job staging_id is committed in dataset's catalog (by `segforge
 * serve`, another process, or this one), reading the catalog every
 * poll interval (100 ms). *version (may be NULL) receives the version that
 * committed it. timeout_ms < 0 waits forever; 0 checks once.
 * SF_STATUS_TIMEOUT when the time ran out. Reentrant. */
SF_API int sf_index_wait_committed(const char *dataset, const char *staging_id,
                                   int timeout_ms, uint64_t *version, sf_error *err);

/* ---- searcher --------------------------------------------------------------- */

/* A committed index opened for search: the newest catalog version's segments
 * of the index and its quantizer. A later commit is not seen; open again to
 * see it.
 *
 * Thread-safety: sf_index_search may be called from any number of threads
 * at once on one index. Each call borrows a searcher (the segment files
 * mapped, plus one query's scratch state) from the index's pool, opening a
 * new one when all are busy, and gives it back; the pool grows to the most
 * calls that ever ran at once and is freed with the index. Searchers share
 * the quantizer, and the kernel shares the mapped pages. The getters are
 * thread-safe too. sf_index_close must not race with a search.
 *
 * Files: a searcher maps its files when it is opened and keeps them mapped
 * until the index is closed, so `segforge gc` may remove the files of a
 * superseded version under it safely. A searcher opened later (a burst of
 * more concurrent calls than before) opens the files again; if gc removed
 * them by then, that call fails with SF_STATUS_NOT_FOUND: open the index
 * again to search the newest version. */
typedef struct sf_index sf_index;

/* Opens index `index` of dataset (a directory or file:// URI).
 * SF_STATUS_NOT_FOUND when the dataset has no catalog or no such index.
 * *out is freed by sf_index_close. */
SF_API int sf_index_open(const char *dataset, const char *index, sf_index **out,
                         sf_error *err);
/* Accepts NULL. */
SF_API void sf_index_close(sf_index *ix);

SF_API uint32_t sf_index_dim(const sf_index *ix);
SF_API uint32_t sf_index_nlist(const sf_index *ix);
SF_API uint64_t sf_index_num_rows(const sf_index *ix);
SF_API size_t sf_index_num_segments(const sf_index *ix);
/* The catalog version the index was read from. */
SF_API uint64_t sf_index_version(const sf_index *ix);
/* "IVF_FLAT", "IVF_SQ" or "IVF_PQ"; "L2", "COSINE" or "DOT" (static). */
SF_API const char *sf_index_algorithm(const sf_index *ix);
SF_API const char *sf_index_metric(const sf_index *ix);

/* The k nearest rows of each of nq queries (nq * dim floats, row-major;
 * dim must be the index's) among the nprobe nearest partitions (1..nlist;
 * nprobe >= nlist scans every row). Results, row-major nq * k, best first:
 * ids[q * k + j] the row id, distances[q * k + j] its distance (smaller is
 * closer: squared Euclidean for L2, minus the inner product for DOT and
 * COSINE (on unit vectors), as estimated by the index's codes; exact for
 * IVF_FLAT). Slots beyond the rows that exist hold SF_NO_ROW_ID and
 * INFINITY. Ties go to the smaller row id. distances may be NULL.
 * Thread-safe (see above). */
SF_API int sf_index_search(sf_index *ix, const float *queries, uint64_t nq, uint32_t dim,
                           uint32_t k, uint32_t nprobe, uint64_t *ids, float *distances,
                           sf_error *err);

/* ---- recall ----------------------------------------------------------------- */

/* Exact k nearest rows of each query among n base rows held in memory, by
 * brute force: the ground truth to measure an index against. A NaN or
 * infinite value in base or queries is refused with SF_STATUS_INVALID
 * naming the row and element. base_ids[n]
 * gives each base row's row id (NULL: its position). metric: "L2",
 * "COSINE" or "DOT"; distances as sf_index_search reports them for
 * IVF_FLAT, with the same tie rule. distances may be NULL. Reentrant. */
SF_API int sf_exact_search(const float *base, const uint64_t *base_ids, uint64_t n,
                           const float *queries, uint64_t nq, uint32_t dim,
                           const char *metric, uint32_t k, uint64_t *ids,
                           float *distances, sf_error *err);

/* Recall@k: the fraction of the true k nearest rows (truth, nq * k_truth,
 * its first k of each row used) found among the first k results of each
 * query (found, nq * k_found). k <= k_found and k <= k_truth. SF_NO_ROW_ID
 * entries of truth are not counted. Returns a value in [0, 1], or -1 for
 * bad arguments. Pure. */
SF_API double sf_recall(const uint64_t *found, uint32_t k_found, const uint64_t *truth,
                        uint32_t k_truth, uint64_t nq, uint32_t k);

#ifdef __cplusplus
}
#endif

#endif /* SEGFORGE_H */
