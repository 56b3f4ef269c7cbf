"""Rebuild the embedded Fashion-MNIST subset shipped in ``bench/data/``.

Takes the first N images of each class (in file order) from the official IDX
files, e.g. those of Debian's ``dataset-fashion-mnist`` package:

    python scripts/make_embedded_subset.py /usr/share/datasets/fashion-mnist
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.data import read_idx


def first_per_class(x: np.ndarray, y: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` examples of every class, in file order."""
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    keep.sort()
    return x[keep], y[keep]


def main() -> None:
    """Write ``bench/data/fashion_mnist_subset.npz``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    xtr, ytr = first_per_class(
        read_idx(args.source / "train-images-idx3-ubyte.gz"),
        read_idx(args.source / "train-labels-idx1-ubyte.gz"),
        args.train_per_class,
    )
    xte, yte = first_per_class(
        read_idx(args.source / "t10k-images-idx3-ubyte.gz"),
        read_idx(args.source / "t10k-labels-idx1-ubyte.gz"),
        args.test_per_class,
    )
    out = Path(__file__).resolve().parent.parent / "bench" / "data" / "fashion_mnist_subset.npz"
    np.savez_compressed(out, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    print(f"wrote {out}: {len(xtr)} train, {len(xte)} test")


if __name__ == "__main__":
    main()
