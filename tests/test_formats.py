"""Datasets read from files in their real on-disk formats, generated here: CIFAR-10/100 pickle batches (folder and
archive), SVHN's .mat files, MNIST's IDX files. Each reader is compared with torchvision's reading of the same files
(its md5 check bypassed: the files are not the published ones), and `bench run` runs end to end on each."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd

from bench.cli import main
from bench.data import dataset_info, load_data, to_split
from bench.data.formats import CIFAR10, CIFAR100, read_cifar, read_svhn
from bench.methods.ticket import load_ticket

RUN = ["--arch", "mlp", "--width", "0.1", "--epochs", "1", "--train-steps", "1", "--n-eval", "20",
       "--n-eval-aa", "5", "--eval-attacks", "pgd20", "--device", "cpu", "--batch-size", "50"]


def write_cifar(root: Path, classes: int, n_train: int = 200, n_test: int = 40) -> Dict[str, Any]:
    """A CIFAR-10 (``classes`` 10) or CIFAR-100 folder in torchvision's layout; returns the arrays written."""
    layout = CIFAR10 if classes == 10 else CIFAR100
    rng = np.random.default_rng(classes)
    folder = root / layout.folder
    folder.mkdir(parents=True)
    written: Dict[str, Any] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}

    def batch(name: str, n: int, split: str) -> None:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, classes, n).tolist()
        entry: Dict[Any, Any] = {"batch_label": name, "data": x, "filenames": [f"{i}.png" for i in range(n)]}
        entry[layout.labels] = y
        if classes == 100:
            entry["coarse_labels"] = [label // 5 for label in y]
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[f"{split}_x"].append(x)
        written[f"{split}_y"] += y

    for name in layout.train:
        batch(name, n_train // len(layout.train), "train")
    for name in layout.test:
        batch(name, n_test, "test")
    meta = {"label_names": [f"c{i}" for i in range(10)]} if classes == 10 else \
        {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / ("batches.meta" if classes == 10 else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return written


def write_svhn(root: Path, n_train: int = 200, n_test: int = 40) -> None:
    """SVHN's train_32x32.mat and test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 = digit 0)."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0] = 10
        scipy.io.savemat(str(root / name), {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})


def write_idx(folder: Path, n_train: int = 200, n_test: int = 40) -> None:
    """MNIST's four gzipped IDX files."""
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)

    def idx(name: str, arr: np.ndarray) -> None:
        header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
        with gzip.open(folder / f"{name}.gz", "wb") as fh:
            fh.write(header + arr.astype(np.uint8).tobytes())

    idx("train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    idx("train-labels-idx1-ubyte", rng.integers(0, 10, n_train))
    idx("t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    idx("t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test))


@pytest.fixture()
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision read generated files (its md5 check is for the published archives)."""
    for cls in (tvd.CIFAR10, tvd.CIFAR100, tvd.SVHN):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *_args, **_kwargs: True)


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_batches_read_as_torchvision_reads_them(classes: int, tmp_path: Path, no_md5: None) -> None:
    written = write_cifar(tmp_path, classes)
    (xtr, ytr), (xte, yte), where = read_cifar(tmp_path, CIFAR10 if classes == 10 else CIFAR100)
    cls = tvd.CIFAR10 if classes == 10 else tvd.CIFAR100
    tv_train, tv_test = to_split(cls(str(tmp_path), train=True).data, cls(str(tmp_path), train=True).targets), \
        to_split(cls(str(tmp_path), train=False).data, cls(str(tmp_path), train=False).targets)
    assert torch.equal(xtr, tv_train.x) and torch.equal(ytr, tv_train.y)
    assert torch.equal(xte, tv_test.x) and torch.equal(yte, tv_test.y)
    # The layout torchvision documents: row-major 3x1024 planes, red first.
    first = np.concatenate(written["train_x"])[0]
    assert torch.equal(xtr[0, 0].flatten(), torch.from_numpy(first[:1024])) and ytr.tolist() == written["train_y"]
    assert xtr.shape == (200, 3, 32, 32) and where.endswith(CIFAR10.folder if classes == 10 else CIFAR100.folder)


def test_cifar_archive_reads_like_its_folder(tmp_path: Path) -> None:
    """The original archive, left packed, gives what its extracted folder gives."""
    write_cifar(tmp_path / "x", 10)
    with tarfile.open(tmp_path / CIFAR10.archive, "w:gz") as tar:
        tar.add(tmp_path / "x" / CIFAR10.folder, arcname=CIFAR10.folder)
    from_archive, from_folder = read_cifar(tmp_path, CIFAR10), read_cifar(tmp_path / "x", CIFAR10)
    assert all(torch.equal(a, b) for a, b in zip(from_archive[0] + from_archive[1], from_folder[0] + from_folder[1]))
    assert from_archive[2].endswith(CIFAR10.archive)


def test_svhn_mat_files_read_as_torchvision_reads_them(tmp_path: Path, no_md5: None) -> None:
    write_svhn(tmp_path)
    (xtr, ytr), (xte, yte), _ = read_svhn(tmp_path)
    for split, (x, y) in (("train", (xtr, ytr)), ("test", (xte, yte))):
        tv = tvd.SVHN(str(tmp_path), split=split)
        assert torch.equal(x, torch.from_numpy(tv.data)) and torch.equal(y, torch.from_numpy(tv.labels).long())
    assert ytr[0] == 0 and int(ytr.max()) <= 9 and xtr.shape == (200, 3, 32, 32)


def test_a_crafted_batch_cannot_run_code(tmp_path: Path) -> None:
    """A batch pickle naming any global but numpy's array builders is refused, and nothing runs."""

    class Bomb:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    write_cifar(tmp_path, 10)
    (tmp_path / CIFAR10.folder / "data_batch_3").write_bytes(pickle.dumps({"data": Bomb(), "labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR batch .*posix.system is not allowed"):
        read_cifar(tmp_path, CIFAR10)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "data_batch_2").write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]})),
     r"data_batch_2: 'data' must be uint8 of shape \(N, 3072\)"),
    (lambda f: (f / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})),
     r"test_batch: labels must be in \[0, 10\)"),
    (lambda f: (f / "data_batch_1").write_bytes(b"not a pickle"), r"data_batch_1 is not a CIFAR batch"),
])
def test_damaged_batches_are_named(damage: Any, message: str, tmp_path: Path) -> None:
    write_cifar(tmp_path, 10)
    damage(tmp_path / CIFAR10.folder)
    with pytest.raises(ValueError, match=message):
        load_data("cifar10", "full", str(tmp_path))


@pytest.mark.parametrize("dataset, looked_for", [("cifar10", "cifar-10-batches-py/"), ("cifar100", "cifar-100-python.tar.gz"),
                                                 ("svhn", "train_32x32.mat and test_32x32.mat")])
def test_missing_data_says_what_was_looked_for_and_where(dataset: str, looked_for: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.data.sources as data

    def offline(_slug: str) -> Any:
        raise OSError("no network")

    monkeypatch.setattr(data, "_torchvision_download", offline)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match=f"full {dataset} data not found: tried .*{tmp_path}") as info:
        load_data(dataset, "full", str(tmp_path))
    assert looked_for in str(info.value)


def run_rows(out: Path, *args: str) -> pd.DataFrame:
    """`bench run` with a tiny budget; its rows."""
    assert main(["run", "--out", str(out), *RUN, *args]) == 0
    return pd.read_csv(out / "runs.csv")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn", "mnist"])
def test_bench_run_end_to_end_on_real_format_files(dataset: str, tmp_path: Path) -> None:
    """Loader, shapes, labels, the validation split, normalisation and the default eps, through `bench run`."""
    root = tmp_path / "data"
    if dataset == "svhn":
        write_svhn(root / "svhn")
    elif dataset == "mnist":
        write_idx(root / "MNIST" / "raw")
    else:
        write_cifar(root, 10 if dataset == "cifar10" else 100)
    info = dataset_info(dataset)
    bundle = load_data(dataset, "full", str(root), val_fraction=0.1, seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (180, 20, 40)
    assert bundle.train.x.shape[1:] == (info.in_channels, info.image_size, info.image_size)
    assert 0 <= int(bundle.train.y.min()) and int(bundle.train.y.max()) < info.num_classes
    rows = run_rows(tmp_path / "out", "--dataset", dataset, "--data-root", str(root))
    row = rows[rows["attack"] == "pgd20"].iloc[0]
    assert row["dataset"] == dataset and row["n_eval"] == 20
    assert row["eps"] == pytest.approx(info.default_eps)
    run = next((tmp_path / "out" / "runs").iterdir())
    assert json.loads((run / "meta.json").read_text())["data_source"].startswith(str(root))
    assert json.loads((run / "spec.json").read_text())["eps"] == pytest.approx(info.default_eps)
    model = load_ticket(run)
    assert model.normalize.mean.flatten().tolist() == pytest.approx(list(info.mean))


def test_layouts_users_have(tmp_path: Path) -> None:
    """A root holding <dataset>/ folders (as $BENCH_DATA_ROOT does) and a root that is the dataset's folder both work."""
    write_cifar(tmp_path / "cifar10", 10)
    by_parent = load_data("cifar10", "full", str(tmp_path))
    by_folder = load_data("cifar10", "full", str(tmp_path / "cifar10"))
    assert torch.equal(by_parent.test.x, by_folder.test.x)
    names: List[str] = sorted(p.name for p in (tmp_path / "cifar10" / CIFAR10.folder).iterdir())
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch"]


def test_missing_idx_data_says_what_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.data.sources as data

    def offline(_slug: str) -> Any:
        raise OSError("no network")

    monkeypatch.setattr(data, "torchvision_download", offline)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    monkeypatch.setattr(data, "DEBIAN_ROOT", tmp_path / "debian")
    with pytest.raises(ValueError, match=r"full mnist data not found: .*looked for train-images-idx3-ubyte\[.gz\].* MNIST/raw"):
        load_data("mnist", "full", str(tmp_path))
