#!/usr/bin/env python3
"""hnswlib on the same files and settings as `shelf-index-bench`, printing the same JSON lines.

    pip install hnswlib numpy
    scripts/hnswlib-bench.py --base base.npy --queries queries.npy --m 16 --ef-construction 200

Vectors are L2-normalised and compared by inner product (space='ip'), as shelf does.
Searches run on one thread, one query at a time; the build uses --threads (default: all).
memory_bytes is the resident memory the build added, measured as shelf-index-bench does.
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def read_vectors(path):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    if path.endswith(".fvecs"):
        raw = np.fromfile(path, dtype=np.int32)
        dim = raw[0]
        return raw.reshape(-1, dim + 1)[:, 1:].view(np.float32).copy()
    sys.exit(f"unknown vector file type: {path} (expected .npy or .fvecs)")


def rss_bytes():
    """Resident set size of this process (Linux), as shelf-index-bench measures it."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", default="16,32,64,128,256")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--max-queries", type=int)
    a = p.parse_args()
    import hnswlib

    base = read_vectors(a.base)
    queries = read_vectors(a.queries)[: a.max_queries]
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    n, dim = base.shape
    print(f"{n} base vectors, {len(queries)} queries, {dim} dimensions", file=sys.stderr)

    rss_before = rss_bytes()
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=1)
    index.add_items(base, np.arange(n), num_threads=a.threads)
    build_s = time.perf_counter() - started
    memory_bytes = rss_bytes() - rss_before
    print(f"hnswlib built in {build_s:.1f}s, {memory_bytes / 2**20:.1f} MiB", file=sys.stderr)

    truth = []
    for chunk in range(0, len(queries), 256):
        scores = queries[chunk : chunk + 256] @ base.T
        top = np.argpartition(-scores, a.k, axis=1)[:, : a.k]
        truth.extend(set(row) for row in top)

    index.set_num_threads(1)
    for ef in [int(x) for x in a.ef.split(",")]:
        index.set_ef(ef)
        latencies = []
        found = 0
        sweep = time.perf_counter()
        for q, t in zip(queries, truth):
            s = time.perf_counter()
            labels, _ = index.knn_query(q, k=a.k)
            latencies.append((time.perf_counter() - s) * 1e3)
            found += len(t.intersection(labels[0].tolist()))
        elapsed = time.perf_counter() - sweep
        latencies.sort()
        pct = lambda q: latencies[round((len(latencies) - 1) * q)]
        print(json.dumps({
            "index": "hnswlib",
            "ef": ef,
            "build_s": round(build_s, 3),
            "qps": round(len(queries) / elapsed, 1),
            f"recall_at_{a.k}": round(found / (len(queries) * a.k), 4),
            "p50_ms": round(pct(0.5), 3),
            "p99_ms": round(pct(0.99), 3),
            "memory_bytes": memory_bytes,
        }))


if __name__ == "__main__":
    main()
