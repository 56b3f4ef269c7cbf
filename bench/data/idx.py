"""The IDX format of MNIST and Fashion-MNIST (optionally gzipped): one file per array, a big-endian header."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from bench.data.base import Split, to_split


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} values")
    return arr.reshape(dims)


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_idx_folder(root: Path, subdirs: List[str]) -> Optional[Path]:
    """A folder under ``root`` that holds the four IDX files (gzipped or not)."""
    for sub in subdirs:
        folder = root / sub if sub else root
        if all((folder / n).exists() or (folder / (n + ".gz")).exists() for n in IDX_NAMES):
            return folder
    return None


def load_idx_folder(folder: Path) -> Tuple[Split, Split]:
    """Train and test splits from a folder of the four IDX files."""
    def pick(name: str) -> Path:
        gz = folder / (name + ".gz")
        return gz if gz.exists() else folder / name

    train = to_split(read_idx(pick(IDX_NAMES[0])), read_idx(pick(IDX_NAMES[1])))
    test = to_split(read_idx(pick(IDX_NAMES[2])), read_idx(pick(IDX_NAMES[3])))
    return train, test
