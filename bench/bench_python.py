#!/usr/bin/python3
"""The Python package beside the C library it wraps, on the same rows, the
same index and the same queries: bench_api (bench/bench_api.c) runs first in
DIR and leaves its vectors (base.fvecs), staging root and finalized index
there; this script rebuilds its vectors and queries bit for bit (the same
splitmix64 generator, in numpy; checked against base.fvecs), then times

  - ShardWriter.add from numpy, 10,000 rows a call, against sf_shard_writer;
  - Index.search of 2000 queries (k 10, nprobe 16) from 1 and THREADS Python
    threads on the same index, against sf_index_search from 1 and THREADS
    pthreads;
  - one query a call, which shows what a call through the binding costs.

Medians of RUNS runs. Run by bench/bench_python.sh; never part of the tests.

  bench_python.py BENCH_API SEGFORGE DIR ROWS DIM RUNS THREADS
"""
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import segforge

PER, NQ, K, NPROBE = 10000, 2000, 10, 16
GAMMA = np.uint64(0x9E3779B97F4A7C15)


def splitmix(seed, first, count):
    """Outputs first+1 .. first+count of bench_api's rng() from seed."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(first + 1, first + count + 1, dtype=np.uint64) * GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def vectors(n, dim, seed):
    """bench_api.c's vectors(): 1000 centres, then per row a centre and noise."""
    unit = lambda r: (r >> np.uint64(40)).astype(np.float32) / np.float32(16777216.0)  # noqa
    c = unit(splitmix(seed, 0, 1000 * dim)).reshape(1000, dim)
    r = splitmix(seed, 1000 * dim, n * (dim + 1)).reshape(n, dim + 1)
    centre = c[(r[:, 0] % np.uint64(1000)).astype(np.int64)]
    return centre + np.float32(0.05) * (unit(r[:, 1:]) - np.float32(0.5))


def median_of(runs, fn):
    return statistics.median(fn() for _ in range(runs))


def main():
    bench_api, prog, d, rows, dim, runs, threads = sys.argv[1:8]
    rows, dim, runs, threads = int(rows) // PER * PER, int(dim), int(runs), int(threads)
    c_out = subprocess.run([bench_api, prog, d, str(rows), str(dim), str(runs), str(threads)],
                           check=True, capture_output=True, text=True).stdout
    c_writer = float(re.search(r"sf_shard_writer \(memory\)\s+\S+ s\s+(\d+)", c_out).group(1))
    c_one = float(re.search(r"1 thread\s+(\d+)", c_out).group(1))
    c_many = float(re.search(r"threads, one index\s+(\d+)", c_out).group(1))

    x = vectors(rows, dim, 1)
    raw = np.fromfile(os.path.join(d, "base.fvecs"), dtype=np.float32).reshape(rows, dim + 1)
    if not np.array_equal(raw[:, 1:], x):
        raise SystemExit("the rebuilt vectors differ from bench_api's base.fvecs")
    i = np.arange(rows, dtype=np.uint64)
    ids = ((i // np.uint64(PER)) << np.uint64(32)) | (i % np.uint64(PER))
    root = segforge.staging_root(d, "bench")
    frags = "0-%d" % (rows // PER - 1)

    def write():
        t0 = time.monotonic()
        with segforge.ShardWriter(root, "py", frags, exclusive=False) as w:
            for at in range(0, rows, PER):
                w.add(x[at:at + PER], ids[at:at + PER])
        return time.monotonic() - t0

    py_writer = rows / median_of(runs, write)

    ix = segforge.Index(d, "idx")
    q = vectors(NQ, dim, 2)

    def search(nthreads):
        parts = np.array_split(q, nthreads)
        ts = [threading.Thread(target=ix.search, args=(p,), kwargs={"k": K, "nprobe": NPROBE})
              for p in parts]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return NQ / (time.monotonic() - t0)

    singles = [np.ascontiguousarray(q[j:j + 1]) for j in range(NQ)]

    def one_by_one():
        t0 = time.monotonic()
        for s in singles:
            ix.search(s, k=K, nprobe=NPROBE)
        return NQ / (time.monotonic() - t0)

    search(threads)  # warm the pool
    # Interleaved, so that a change of load on the machine hits all three alike.
    one, many, single = [], [], []
    for _ in range(runs):
        one.append(search(1))
        many.append(search(threads))
        single.append(one_by_one())
    py_one, py_many, py_single = (statistics.median(v) for v in (one, many, single))
    ix.close()

    print(c_out, end="")
    print("Python package on the same rows, index and queries (median of %d):" % runs)
    print("  %-38s %10s %10s %7s" % ("", "C", "Python", "Py/C"))
    for name, c, p in (("ShardWriter.add, rows/s", c_writer, py_writer),
                       ("search 1 thread, queries/s", c_one, py_one),
                       ("search %d threads, queries/s" % threads, c_many, py_many),
                       ("search one query a call, queries/s", c_one, py_single)):
        print("  %-38s %10.0f %10.0f %7.2f" % (name, c, p, p / c))
    print("  %-38s %10.2f" % ("Python threads speed-up (%d/1)" % threads, py_many / py_one))
    print("  %-38s %10.1f us" % ("cost of one call (single - batched)",
                                 1e6 * (1 / py_single - 1 / py_one)))


if __name__ == "__main__":
    main()
