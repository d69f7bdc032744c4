#!/usr/bin/python3
"""The FAISS reference for bench_build.sh: the same vectors, split into the
same number of IndexIVFFlat shards with the same nlist, merged with
faiss.contrib.ondisk.merge_ondisk (FAISS's own "finalize a distributed
build" path). Run with Debian's interpreter (/usr/bin/python3), which has
python3-faiss.

  faiss_merge.py prepare --vectors base.fvecs --nlist N --shards S --work DIR
  faiss_merge.py merge --work DIR --runs K

`prepare` trains and writes the shards (not timed). `merge` times K merges
(read shards, merge_ondisk, write the index, sync to disk, like segforge's
fsync) and prints one JSON line: {"seconds": [...], "shard_bytes": B}.
"""
import argparse
import glob
import json
import os
import sys
import time

import faiss
import numpy as np


def read_fvecs(path):
    raw = np.memmap(path, dtype=np.int32, mode="r")
    dim = int(raw[0])
    rows = raw.size // (dim + 1)
    return raw.reshape(rows, dim + 1)[:, 1:].view(np.float32), dim


def prepare(a):
    x, dim = read_fvecs(a.vectors)
    n = x.shape[0]
    os.makedirs(a.work, exist_ok=True)
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, a.nlist)
    rng = np.random.default_rng(1)
    sample = np.ascontiguousarray(x[np.sort(rng.choice(n, min(n, 64 * a.nlist), replace=False))])
    index.train(sample)
    faiss.write_index(index, os.path.join(a.work, "trained.index"))
    per = (n + a.shards - 1) // a.shards
    for s in range(a.shards):
        lo, hi = s * per, min(n, (s + 1) * per)
        shard = faiss.read_index(os.path.join(a.work, "trained.index"))
        for b in range(lo, hi, 262144):
            e = min(hi, b + 262144)
            shard.add_with_ids(np.ascontiguousarray(x[b:e]), np.arange(b, e, dtype=np.int64))
        faiss.write_index(shard, os.path.join(a.work, "shard_%03d.index" % s))
        print("faiss: shard %d/%d rows %d-%d" % (s + 1, a.shards, lo, hi), file=sys.stderr)


def merge(a):
    from faiss.contrib.ondisk import merge_ondisk

    shards = sorted(glob.glob(os.path.join(a.work, "shard_*.index")))
    shard_bytes = sum(os.path.getsize(p) for p in shards)
    times = []
    for _ in range(a.runs):
        out_data = os.path.join(a.work, "merged.ivfdata")
        out_index = os.path.join(a.work, "merged.index")
        for p in (out_data, out_index):
            if os.path.exists(p):
                os.unlink(p)
        os.sync()
        t0 = time.perf_counter()
        index = faiss.read_index(os.path.join(a.work, "trained.index"))
        merge_ondisk(index, shards, out_data)
        faiss.write_index(index, out_index)
        del index  # unmaps and flushes the on-disk lists
        os.sync()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": times, "shard_bytes": shard_bytes}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--vectors", required=True)
    p.add_argument("--nlist", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--work", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--work", required=True)
    m.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    prepare(a) if a.cmd == "prepare" else merge(a)


if __name__ == "__main__":
    main()
