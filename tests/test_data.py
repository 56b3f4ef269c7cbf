"""Data: the embedded subset, the validation split, full-data resolution and the IDX reader."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.data.sources as sources_mod
from bench.data import DATASETS, EMBEDDED, load_data, read_idx

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def make_idx_folder(folder: Path, n_train: int, n_test: int) -> None:
    """A miniature MNIST-like folder with the four official file names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_embedded_subset_is_balanced_and_licensed() -> None:
    with np.load(EMBEDDED) as z:
        assert z["x_train"].shape == (6000, 28, 28) and z["x_test"].shape == (1000, 28, 28)
        assert z["x_train"].dtype == np.uint8
        assert np.bincount(z["y_train"]).tolist() == [600] * 10
        assert np.bincount(z["y_test"]).tolist() == [100] * 10
    notice = (EMBEDDED.parent / "LICENSE-fashion-mnist.txt").read_text()
    assert "MIT" in notice and "Zalando SE" in notice


def test_validation_split_is_held_out_and_seeded() -> None:
    a = load_data("fashion-mnist", val_fraction=0.1, seed=0)
    b = load_data("fashion-mnist", val_fraction=0.1, seed=0)
    c = load_data("fashion-mnist", val_fraction=0.1, seed=1)
    assert len(a.val) == 600 and len(a.train) == 5400 and len(a.test) == 1000
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    # No validation image appears among the training images.
    train_keys = {bytes(x.numpy()) for x in a.train.x}
    assert not any(bytes(x.numpy()) in train_keys for x in a.val.x)
    assert load_data("fashion-mnist", n_train=100).train.x.shape == (100, 1, 28, 28)


def test_data_root_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_folder(tmp_path / "mine" / "mnist", 50, 20)
    make_idx_folder(tmp_path / "debian" / "mnist", 70, 30)
    monkeypatch.setattr(sources_mod, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.delenv(sources_mod.ENV_ROOT, raising=False)
    assert len(load_data("mnist", "full", str(tmp_path / "mine"), val_fraction=0.2).test) == 20
    assert len(load_data("mnist", "full", None).test) == 30
    monkeypatch.setenv(sources_mod.ENV_ROOT, str(tmp_path / "mine"))
    assert len(load_data("mnist", "full", None).test) == 20


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 3) + b"\x00" * 12)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(p)
    with gzip.open(p, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 5) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header says"):
        read_idx(p)


def test_cifar_loader_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    # A miniature CIFAR-10 folder in torchvision's own format (right shapes, few images).
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *args, **kwargs: True)
    bundle = load_data("cifar10", "full", str(tmp_path), val_fraction=0.25)
    assert bundle.train.x.shape[1:] == (3, 32, 32) and bundle.test.x.shape == (6, 3, 32, 32)
    assert len(bundle.train) + len(bundle.val) == 20 and bundle.info.default_eps == pytest.approx(8 / 255)


@pytest.mark.fulldata
def test_full_fashion_mnist_from_debian() -> None:
    bundle = load_data("fashion-mnist", "full", None, val_fraction=0.1)
    assert len(bundle.train) + len(bundle.val) == 60000 and len(bundle.test) == 10000
    assert bundle.source.endswith("fashion-mnist")


@pytest.mark.fulldata
def test_full_mnist_from_shared_matches_published_md5() -> None:
    root = SHARED_MNIST.parent
    bundle = load_data("mnist", "full", str(root), val_fraction=0.1)
    assert len(bundle.train) + len(bundle.val) == 60000 and len(bundle.test) == 10000
    # MD5SUMS lines read "<md5>  <file>.gz (uncompressed content)".
    lines = [line.split() for line in (SHARED_MNIST / "MD5SUMS").read_text().splitlines() if line.strip()]
    assert len(lines) == 4
    for digest, name, *_ in lines:
        with gzip.open(SHARED_MNIST / name, "rb") as fh:
            assert hashlib.md5(fh.read()).hexdigest() == digest, name


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_sane_facts(name: str) -> None:
    info = DATASETS.get(name)[0]
    assert info.in_channels in (1, 3) and 0 < info.default_eps < 1
    # A folder dataset's classes come from the spec; the others fix theirs, and their sizes.
    assert info.num_classes == 0 if info.from_folder else (info.num_classes >= 10 and info.train_size > 0 < info.test_size)
    assert len(info.mean) == len(info.std) == info.in_channels
