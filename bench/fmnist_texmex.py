#!/usr/bin/python3
"""Fashion-MNIST (Debian's dataset-fashion-mnist) as a texmex data set.

Writes OUT/base.fvecs (the 60,000 training images, 784 float32 each),
OUT/query.fvecs (the first --queries of the 10,000 test images) and
OUT/gt.ivecs (the exact --k nearest base rows of each query under L2, by
brute force): the ann-benchmarks set fashion-mnist-784-euclidean.
"""
import argparse
import gzip
import os
import sys

import numpy as np

SRC = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    n, rows, cols = (int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in (1, 2, 3))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def write_vecs(path, a, dtype):
    a = np.ascontiguousarray(a, dtype=dtype)
    out = np.empty((a.shape[0], a.shape[1] + 1), dtype=np.int32)
    out[:, 0] = a.shape[1]
    out[:, 1:] = a.view(np.int32)
    out.tofile(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    a = ap.parse_args()
    train = os.path.join(SRC, "train-images-idx3-ubyte.gz")
    if not os.path.exists(train):
        sys.exit(f"{train} is missing: apt-get install dataset-fashion-mnist")
    xb = read_idx(train).astype(np.float32)
    xq = read_idx(os.path.join(SRC, "t10k-images-idx3-ubyte.gz"))[: a.queries].astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    write_vecs(os.path.join(a.out, "base.fvecs"), xb, np.float32)
    write_vecs(os.path.join(a.out, "query.fvecs"), xq, np.float32)
    nb = (xb.astype(np.float64) ** 2).sum(1)
    gt = np.empty((len(xq), a.k), dtype=np.int32)
    for i in range(0, len(xq), 256):  # exact in float64: pixel values are integers
        q = xq[i:i + 256].astype(np.float64)
        d = nb[None, :] - 2 * q @ xb.T.astype(np.float64)
        idx = np.argpartition(d, a.k, axis=1)[:, : a.k]
        order = np.take_along_axis(d, idx, 1).argsort(axis=1, kind="stable")
        gt[i:i + 256] = np.take_along_axis(idx, order, 1)
    write_vecs(os.path.join(a.out, "gt.ivecs"), gt, np.int32)


if __name__ == "__main__":
    main()
