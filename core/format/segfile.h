/*
 * segfile.h - the shard/segment file format (docs/format.md byte by byte).
 *
 * One format serves shards (a worker's partial IVF index over some
 * fragments) and segments (the merge of several shards). Each partition is a
 * list of self-contained *chunks* (a raw code block plus a zstd-compressed,
 * delta-encoded row-id block, each with its CRC-32C), laid out partition by
 * partition. A segment's partition is the concatenation of its shards'
 * chunks for that partition, so a merge copies each shard's byte range for
 * the partition verbatim (copy_file_range) and only rebuilds the directory:
 * nothing is decoded or re-encoded, and a build runs at the speed of the disk.
 *
 * Files are immutable once renamed into place; readers map them. A file that
 * is truncated or rewritten in place while mapped can fault the process
 * (SIGBUS), as with any mapped-file reader: writers never do that.
 */
#ifndef SF_SEGFILE_H
#define SF_SEGFILE_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/base/types.h"

/* The first 8 bytes of every shard or segment file, for sniffing. */
#define SF_SEG_MAGIC "SFSG\r\n\x1a\n"
#define SF_SEG_MAGIC_LEN 8
#define SF_SEG_VERSION_MAJOR 1
#define SF_SEG_VERSION_MINOR 0

/* A chunk holds at most this many rows (a format limit every reader checks):
 * it bounds the scratch memory a read needs whatever the file says. Writers
 * split larger inputs. */
#define SF_SEG_MAX_CHUNK_ROWS 65536u

typedef enum sf_seg_kind { SF_SEG_KIND_SHARD = 1, SF_SEG_KIND_SEGMENT = 2 } sf_seg_kind;

/* "shard", "segment" or "unknown". */
const char *sf_seg_kind_name(sf_seg_kind k);

typedef struct sf_seg_params {
  sf_seg_kind kind;
  sf_index_type type;
  sf_metric metric;
  uint32_t dim;       /* 1..SF_MAX_DIM */
  uint32_t nlist;     /* partitions, 1..SF_MAX_NLIST */
  uint32_t code_size; /* bytes per row: IVF_FLAT 4*dim, IVF_SQ dim, IVF_PQ pq_m */
  uint32_t pq_m;      /* IVF_PQ: sub-quantizers (divides dim); 0 otherwise */
  uint64_t quantizer_checksum;
} sf_seg_params;

/* The code size a type implies (0 if the parameters make no sense). */
uint32_t sf_seg_code_size(sf_index_type type, uint32_t dim, uint32_t pq_m);

/* Checks params for consistency and limits; SF_EINVAL naming the field. */
sf_code sf_seg_params_check(const sf_seg_params *p, sf_err *err);

/* ---- writer ----------------------------------------------------------------
 * Writes to "<path>.tmp.*" in the same directory; sf_seg_writer_finish
 * fsyncs and renames it to path. Partitions are written in non-decreasing
 * order, each as any mix of add_chunk, copy_partition and join_partition
 * calls. A writer is
 * used by one thread at a time.
 *
 * Errors: an argument error (SF_EINVAL, SF_EMISMATCH) or a corrupt source
 * (SF_ECORRUPT) changes nothing, and the writer may go on; after an I/O error
 * (SF_EIO, SF_ENOMEM) every further call fails and only abort remains. */
typedef struct sf_seg_writer sf_seg_writer;
typedef struct sf_seg_reader sf_seg_reader;

/* Starts a file with params p (checked, SF_EINVAL). *w is freed by
 * sf_seg_writer_finish or sf_seg_writer_abort. */
sf_code sf_seg_writer_open(const char *path, const sf_seg_params *p, sf_seg_writer **w,
                           sf_err *err);

/* Appends n rows to `partition`: ids[n] strictly ascending, codes[n *
 * code_size]. n == 0 is a no-op; n > SF_SEG_MAX_CHUNK_ROWS is split into
 * several chunks. Copies the input; the caller keeps ownership. */
sf_code sf_seg_writer_add_chunk(sf_seg_writer *w, uint32_t partition, const sf_rowid *ids,
                                const uint8_t *codes, uint32_t n, sf_err *err);

/* Appends src's chunks of `partition` verbatim: verifies every block CRC of
 * the range (and that its padding is zero), then copies the bytes with
 * copy_file_range, or from the mapping where the kernel cannot. src's
 * parameters other than kind must equal the writer's (SF_EMISMATCH naming
 * the field). */
sf_code sf_seg_writer_copy_partition(sf_seg_writer *w, const sf_seg_reader *src,
                                     uint32_t partition, sf_err *err);

/* ---- joining small chunks ------------------------------------------------
 * Block copy keeps every source's chunks, so an index merged from many small
 * jobs holds, per partition, one tiny chunk per job, and a search pays per
 * chunk (docs/format.md, "Why chunks"). join_partition appends partition
 * `partition` of srcs[0..n), in that order, and joins small chunks on the
 * way: a chunk of fewer than min_rows rows is CRC-checked, its row ids are
 * decoded and its code bytes appended unchanged (no re-encoding) to a pending
 * run, as long as the ids stay strictly ascending across the run and the run
 * stays within max_rows; otherwise the run is written as one chunk (ids delta
 * + zstd as add_chunk writes them, new CRCs) and a new run starts. A run of
 * one source chunk is copied verbatim. A chunk of min_rows rows or more is
 * block-copied verbatim (with the chunks of the same source next to it) after
 * the pending run is written. Row ids ascend across sources when each source
 * covers later fragments than the one before (a compaction of consecutive
 * jobs, inputs in order of their lowest fragment); where they do not, a new
 * chunk starts, so the result is correct for any order.
 *
 * Memory: one run, max_rows x (code_size + 8) bytes, plus the decoding
 * scratch of one small chunk; both live in the writer until it is freed.
 * max_rows is further capped so that a run holds at most
 * SF_SEG_JOIN_MAX_BYTES of codes (so wide FLAT codes cannot blow the
 * bound), and min_rows is at most that cap.
 *
 * Errors: every block CRC (and the zero padding of what is copied as a
 * range) of the partition in every source is checked before anything is
 * written, so a corrupt block is SF_ECORRUPT naming the file, and the writer
 * may go on. A row-id block behind a valid CRC that does not decode is
 * found only while writing: that is SF_ECORRUPT too, but the writer is then
 * broken (as after an I/O error) when part of the partition was written. */
typedef struct sf_seg_join_opts {
  /* Rows of a joined chunk at most, <= SF_SEG_MAX_CHUNK_ROWS; 0 = default. */
  uint32_t max_rows;
  /* Chunks of at least this many rows are copied as they are; 0 = default. */
  uint32_t min_rows;
} sf_seg_join_opts;

/* The defaults, chosen by measurement (bench/bench_chunks.sh; docs/format.md,
 * "Joining small chunks"): a search pays per chunk about what it pays to
 * scan one row of IVF_SQ dim 64, or three of IVF_PQ m 8, so chunks of 256
 * rows or more are within 1-2% of one chunk per partition and are not worth
 * a rewrite, while chunks of 1 to 8 rows cost 0.3x to 0.9x. Runs of up to
 * 4096 rows leave nothing measurable to gain and bound the run buffer
 * (288 KiB for 64-byte codes). */
#define SF_SEG_JOIN_MAX_ROWS 4096u
#define SF_SEG_JOIN_MIN_ROWS 256u
#define SF_SEG_JOIN_MAX_BYTES (8u << 20)

/* What joining did to one writer so far (the build's report and tests). */
typedef struct sf_seg_join_stats {
  uint64_t chunks_in;     /* source chunks read by join_partition */
  uint64_t chunks_joined; /* of them, joined into runs of two or more */
  uint64_t chunks_out;    /* chunks join_partition wrote */
  uint64_t rows_joined;   /* rows in runs of two or more chunks */
} sf_seg_join_stats;

/* Appends partition `partition` of srcs[n] (see above); o may be NULL for
 * the defaults. Every source's parameters other than kind must equal the
 * writer's (SF_EMISMATCH naming the field), and each must be mapped
 * (sf_seg_open, not sf_seg_open_meta: SF_EINVAL). The sources are borrowed. */
sf_code sf_seg_writer_join_partition(sf_seg_writer *w, const sf_seg_reader *const *srcs,
                                     size_t n, uint32_t partition,
                                     const sf_seg_join_opts *o, sf_err *err);
void sf_seg_writer_join_stats(const sf_seg_writer *w, sf_seg_join_stats *out);

/* Writes the fragment bitmap (required, owned by the caller), directory,
 * footer and header, then fsyncs and renames into place. Frees w whether it
 * succeeds or not; on failure nothing is left under the final name. */
sf_code sf_seg_writer_finish(sf_seg_writer *w, const roaring_bitmap_t *fragments,
                             sf_err *err);
/* Like finish, but never replaces a file under the final name: SF_EEXIST
 * when one appeared meanwhile (it is left as it was). */
sf_code sf_seg_writer_finish_new(sf_seg_writer *w, const roaring_bitmap_t *fragments,
                                 sf_err *err);

/* Discards the file and frees w; accepts NULL. */
void sf_seg_writer_abort(sf_seg_writer *w);

/* Rows and bytes written so far (the planner and progress reports). */
uint64_t sf_seg_writer_rows(const sf_seg_writer *w);
uint64_t sf_seg_writer_bytes(const sf_seg_writer *w);

/* ---- reader ----------------------------------------------------------------
 * sf_seg_open maps the file and checks, before allocating anything from
 * them, every length, offset and count it holds; it verifies the header,
 * footer, directory and bitmap CRCs. Data blocks are verified as they are
 * read. Errors name the file: SF_ENOTFOUND, SF_EIO, SF_EFORMAT (not this
 * format, or an unsupported version), SF_ECORRUPT (anything else wrong).
 *
 * A reader holds no mutable state: any number of threads may read from one
 * reader at once, each with its own sf_seg_scratch. */

/* Opens path; *r is freed by sf_seg_close. */
sf_code sf_seg_open(const char *path, sf_seg_reader **r, sf_err *err);
/* Opens path for its metadata only: reads the header, footer, bitmap and
 * directory with pread (one read from the end of the file, and one for the
 * header when the file is over 64 KiB) and checks them as sf_seg_open does,
 * without mapping the file or keeping it open. Every getter answers as for
 * sf_seg_open; reading or verifying chunks returns SF_EINVAL, and
 * sf_seg_reader_data is NULL. For a check of a file that is not read
 * further (the stream processor's intake), where a mapping's set-up and
 * teardown cost more than the checks. A bitmap and directory over 256 MiB
 * are SF_ELIMIT. *r is freed by sf_seg_close. */
sf_code sf_seg_open_meta(const char *path, sf_seg_reader **r, sf_err *err);
/* Unmaps and frees; accepts NULL. Pointers obtained from r die with it. */
void sf_seg_close(sf_seg_reader *r);

const char *sf_seg_path(const sf_seg_reader *r);
const sf_seg_params *sf_seg_get_params(const sf_seg_reader *r); /* owned by r */
void sf_seg_version(const sf_seg_reader *r, uint32_t *major, uint32_t *minor);
uint64_t sf_seg_num_rows(const sf_seg_reader *r);
uint64_t sf_seg_file_bytes(const sf_seg_reader *r);
const roaring_bitmap_t *sf_seg_fragments(const sf_seg_reader *r); /* owned by r */

/* Per partition p < nlist (0 for p out of range). */
uint64_t sf_seg_partition_rows(const sf_seg_reader *r, uint32_t p);
uint32_t sf_seg_partition_num_chunks(const sf_seg_reader *r, uint32_t p);
/* Bytes of partition p's data range (what a merge copies for it). */
uint64_t sf_seg_partition_bytes(const sf_seg_reader *r, uint32_t p);
/* The largest chunk's row count (<= SF_SEG_MAX_CHUNK_ROWS). */
uint32_t sf_seg_max_chunk_rows(const sf_seg_reader *r);

/* Per-thread decoding state (zstd context and buffers), reusable across
 * chunks and readers so a scan allocates nothing per chunk. NULL on
 * allocation failure; free with sf_seg_scratch_free (accepts NULL). */
typedef struct sf_seg_scratch sf_seg_scratch;
sf_seg_scratch *sf_seg_scratch_new(void);
void sf_seg_scratch_free(sf_seg_scratch *s);

typedef struct sf_seg_chunk {
  uint32_t nrows;
  /* nrows strictly ascending row ids; owned by the scratch, valid until
   * its next use. */
  const sf_rowid *ids;
  /* nrows * code_size bytes inside the mapping, 64-byte aligned (so float
   * codes can be read in place); valid until sf_seg_close. */
  const uint8_t *codes;
} sf_seg_chunk;

/* Reads chunk c of partition p: verifies both block CRCs and decodes the
 * row ids into s. */
sf_code sf_seg_read_chunk(const sf_seg_reader *r, uint32_t p, uint32_t c,
                          sf_seg_scratch *s, sf_seg_chunk *out, sf_err *err);

/* sf_seg_read_chunk with flags, for the search hot path:
 * SF_SEG_READ_NO_IDS leaves out->ids NULL and skips decoding them (a scan
 * scores the codes first and decodes ids only for chunks that hold a
 * candidate); SF_SEG_READ_NO_CRC skips the block CRCs, which is safe only
 * after sf_seg_verify succeeded on this reader: the file is immutable and
 * mapped, so verified bytes stay verified. Bounds are checked always. */
#define SF_SEG_READ_NO_IDS 1u
#define SF_SEG_READ_NO_CRC 2u
sf_code sf_seg_read_chunk_ex(const sf_seg_reader *r, uint32_t p, uint32_t c,
                             sf_seg_scratch *s, unsigned flags, sf_seg_chunk *out,
                             sf_err *err);

/* Verifies the whole file: every block CRC, every row-id block decodes,
 * padding is zero, and every row id's fragment is in the file's bitmap.
 * Allocates its own scratch. */
sf_code sf_seg_verify(const sf_seg_reader *r, sf_err *err);

#endif
