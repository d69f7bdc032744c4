#!/usr/bin/python3
"""The FAISS side of bench_search.sh: the same data, nlist and nprobe.

Builds IndexIVFFlat / IndexIVFScalarQuantizer(QT_8bit) / IndexIVFPQ(m, 8)
with FAISS's own k-means (its defaults: 10 coarse iterations, 25 for PQ),
then for each --nprobe searches on one thread and prints one JSON line with
recall@k against the ground truth and queries per second (median of
--repeat timed passes). --one-at-a-time searches query by query (a
service's path; it includes about a microsecond of Python per call),
otherwise all queries in one batch. Which FAISS is imported is PYTHONPATH's
choice: Debian's python3-faiss, or the AVX2 build of the anchors.
--save FILE writes the trained index (and searches nothing when --nprobe
is empty); --load FILE searches a saved one, so that a benchmark can take
turns with another engine between timed passes.
"""
import argparse
import json
import os
import statistics
import sys
import time

import faiss
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        sys.exit(f"{path}: inconsistent dimensions")
    return rows[:, 1:].copy().view(dtype) if dtype == np.float32 else rows[:, 1:].copy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--type", default="IVF_FLAT", choices=["IVF_FLAT", "IVF_SQ", "IVF_PQ"])
    ap.add_argument("--metric", default="L2", choices=["L2", "COSINE", "DOT"])
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--nprobe", default="8", help="one nprobe or a comma-separated list")
    ap.add_argument("--pq-m", type=int, default=16)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one-at-a-time", action="store_true")
    ap.add_argument("--seed", type=int, default=None,
                    help="k-means seed of the coarse quantizer and the PQ codebooks "
                         "(default: FAISS's own, 1234)")
    ap.add_argument("--coarse-iters", type=int, default=0,
                    help="k-means iterations of the coarse quantizer (0: FAISS's default, 10)")
    ap.add_argument("--save")
    ap.add_argument("--load")
    a = ap.parse_args()
    faiss.omp_set_num_threads(1)
    xb = read_vecs(f"{a.data}/base.fvecs", np.float32)
    xq = read_vecs(f"{a.data}/query.fvecs", np.float32)
    gt = read_vecs(f"{a.data}/gt.ivecs", np.int32)[:, : a.k]
    d = xb.shape[1]
    metric = faiss.METRIC_L2 if a.metric == "L2" else faiss.METRIC_INNER_PRODUCT
    if a.metric == "COSINE":
        faiss.normalize_L2(xb)
        faiss.normalize_L2(xq)
    train = build = 0.0
    if a.load:
        index = faiss.read_index(a.load)
    else:
        coarse = faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        if a.type == "IVF_FLAT":
            index = faiss.IndexIVFFlat(coarse, d, a.nlist, metric)
        elif a.type == "IVF_SQ":
            index = faiss.IndexIVFScalarQuantizer(coarse, d, a.nlist,
                                                  faiss.ScalarQuantizer.QT_8bit, metric)
        else:
            index = faiss.IndexIVFPQ(coarse, d, a.nlist, a.pq_m, 8, metric)
            if a.seed is not None:
                index.pq.cp.seed = a.seed
        if a.seed is not None:
            index.cp.seed = a.seed
        if a.coarse_iters:
            index.cp.niter = a.coarse_iters
        t0 = time.perf_counter()
        index.train(xb)
        train = time.perf_counter() - t0
        index.add(xb)
        build = time.perf_counter() - t0
        if a.save:
            faiss.write_index(index, a.save)
            print(json.dumps({"engine": "faiss " + faiss.__version__, "type": a.type,
                              "train_s": train, "train_add_s": build}), flush=True)
    for nprobe in (int(v) for v in a.nprobe.split(",") if v):
        index.nprobe = nprobe
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            if a.one_at_a_time:
                ids = np.vstack([index.search(xq[i:i + 1], a.k)[1] for i in range(len(xq))])
            else:
                _, ids = index.search(xq, a.k)
            times.append(time.perf_counter() - t0)
        hits = sum(len(set(ids[i]) & set(gt[i])) for i in range(len(xq)))
        print(json.dumps({"engine": "faiss " + faiss.__version__, "type": a.type,
                          "metric": a.metric, "nlist": a.nlist, "nprobe": nprobe,
                          "recall": hits / (len(xq) * a.k),
                          "qps": len(xq) / statistics.median(times),
                          "qps_runs": [len(xq) / t for t in times], "train_s": train,
                          "train_add_s": build,
                          "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}),
              flush=True)


if __name__ == "__main__":
    main()
