"""Readers of the datasets' original on-disk formats, without torchvision's md5 check.

torchvision refuses a CIFAR or SVHN folder whose files' md5 differ from the
published archives', so a folder a user assembled (or re-pickled) cannot be
read through it. These readers parse the same formats the way torchvision
does (``tests/test_formats.py`` compares them on generated files, with
torchvision's check bypassed) and check what the md5 stood for instead:
shapes, dtype, label ranges and counts. CIFAR batches are pickles; they are
read with an unpickler that builds numpy arrays and nothing else, so a
crafted batch cannot run code.

Layouts found under a root (and under ``root/<dataset>``):

- CIFAR-10: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``) or the archive ``cifar-10-python.tar.gz``.
- CIFAR-100: ``cifar-100-python/`` (``train``, ``test``, ``meta``) or
  ``cifar-100-python.tar.gz``.
- SVHN: ``train_32x32.mat`` and ``test_32x32.mat`` (the original files; label
  10 means digit 0).
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io
import torch

# Globals a CIFAR batch pickle may name: numpy's array reconstruction (Python 2 and 3 spellings) and bytes.
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset batch")
        return super().find_class(module, name)


def load_batch(data: bytes, where: str) -> Dict[str, Any]:
    """One CIFAR batch pickle (Python 2 or 3) as a dict with ``str`` keys; anything else is a ValueError naming it."""
    try:
        entry = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where} is not a CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a CIFAR batch (a {type(entry).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in entry.items()}


@dataclass(frozen=True)
class CifarLayout:
    """A CIFAR flavour's folder, archive, batch files and label key."""

    folder: str
    archive: str
    train: Tuple[str, ...]
    test: Tuple[str, ...]
    labels: str
    classes: int


CIFAR10 = CifarLayout("cifar-10-batches-py", "cifar-10-python.tar.gz", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), "labels", 10)
CIFAR100 = CifarLayout("cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), "fine_labels", 100)
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _cifar_split(batches: Sequence[Tuple[str, bytes]], layout: CifarLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels of some batches, checked."""
    xs, ys = [], []
    for where, data in batches:
        entry = load_batch(data, where)
        if "data" not in entry or layout.labels not in entry:
            raise ValueError(f"{where} lacks '{'data' if 'data' not in entry else layout.labels}'")
        x, y = np.asarray(entry["data"]), np.asarray(entry[layout.labels], dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{where}: 'data' must be uint8 of shape (N, 3072), got {x.dtype} {x.shape}")
        if y.shape != (len(x),):
            raise ValueError(f"{where}: {len(x)} images but {y.size} labels")
        if len(y) and (y.min() < 0 or y.max() >= layout.classes):
            raise ValueError(f"{where}: labels must be in [0, {layout.classes}), got {y.min()}..{y.max()}")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _cifar_batches(root: Path, layout: CifarLayout) -> Optional[Callable[[Sequence[str]], List[Tuple[str, bytes]]]]:
    """A reader of named batch files from ``root``'s folder or archive (None: neither is there)."""
    folder = root / layout.folder
    if all((folder / name).is_file() for name in layout.train + layout.test):
        return lambda names: [(str(folder / n), (folder / n).read_bytes()) for n in names]
    archive = root / layout.archive
    if archive.is_file():
        def read(names: Sequence[str]) -> List[Tuple[str, bytes]]:
            with tarfile.open(archive, "r:gz") as tar:
                out = []
                for n in names:
                    member = tar.extractfile(f"{layout.folder}/{n}")
                    if member is None:
                        raise ValueError(f"{archive} has no file {layout.folder}/{n}")
                    out.append((f"{archive}:{layout.folder}/{n}", member.read()))
                return out
        return read
    return None


def read_cifar(root: Path, layout: CifarLayout) -> Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor], str]]:
    """Train and test (images, labels) of a CIFAR flavour under ``root``, and where they were read; None if absent."""
    read = _cifar_batches(root, layout)
    if read is None:
        return None
    where = str(root / layout.folder) if (root / layout.folder).is_dir() else str(root / layout.archive)
    try:
        return _cifar_split(read(layout.train), layout), _cifar_split(read(layout.test), layout), where
    except (KeyError, tarfile.TarError) as exc:
        raise ValueError(f"{where}: {type(exc).__name__}: {exc}") from None


def read_svhn(root: Path) -> Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor], str]]:
    """Train and test (images, labels) from SVHN's two .mat files under ``root``; None if absent."""
    if not all((root / name).is_file() for name in SVHN_FILES):
        return None
    splits = []
    for name in SVHN_FILES:
        path = root / name
        try:
            mat = scipy.io.loadmat(str(path))
        except (ValueError, OSError, TypeError) as exc:
            raise ValueError(f"{path} is not a MATLAB file ({type(exc).__name__}: {exc})") from None
        if "X" not in mat or "y" not in mat:
            raise ValueError(f"{path} lacks {'X' if 'X' not in mat else 'y'}")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
        if len(y) != x.shape[3]:
            raise ValueError(f"{path}: {x.shape[3]} images but {len(y)} labels")
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise ValueError(f"{path}: labels must be in 1..10 (10 = digit 0), got {y.min()}..{y.max()}")
        # (H, W, C, N) -> (N, C, H, W); label 10 is digit 0, as torchvision reads it.
        images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))
        splits.append((torch.from_numpy(images), torch.from_numpy(np.where(y == 10, 0, y))))
    return splits[0], splits[1], str(root)


def expected_files(slug: str) -> str:
    """What a dataset's readers look for, for error messages."""
    if slug == "svhn":
        return " and ".join(SVHN_FILES)
    layout = CIFAR10 if slug == "cifar10" else CIFAR100
    return f"{layout.folder}/ ({', '.join(layout.train + layout.test)}) or {layout.archive}"
