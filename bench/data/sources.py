"""Where full data is found, in order: ``--data-root`` or ``$BENCH_DATA_ROOT``, then Debian's
``/usr/share/datasets/<name>`` (``dataset-fashion-mnist``), then a torchvision download into
``~/.cache/robust-tickets``; if all fail the error names all three. One loader per kind of dataset (IDX files,
CIFAR/SVHN files, a user's image folder)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from bench.data.base import DataNotFoundError, DatasetInfo, Loader, Split, to_split
from bench.data.formats import CIFAR10, CIFAR100, expected_files, read_cifar, read_svhn
from bench.data.idx import IDX_NAMES, find_idx_folder, load_idx_folder
from bench.data.imagefolder import expected_layout, read_image_folder

EMBEDDED = Path(__file__).resolve().parent / "fashion_mnist_subset.npz"
ENV_ROOT = "BENCH_DATA_ROOT"
DEBIAN_ROOT = Path("/usr/share/datasets")
CACHE_ROOT = Path.home() / ".cache" / "robust-tickets"


def _root_candidates(data_root: Optional[str]) -> List[Path]:
    """User-given roots: the flag first, then the environment variable."""
    roots = [data_root, os.environ.get(ENV_ROOT)]
    return [Path(r).expanduser() for r in roots if r]


def torchvision_download(slug: str) -> Tuple[Split, Split]:
    """Last resort for MNIST-like data: torchvision's downloader into the cache."""
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST}[slug]
    tr = cls(str(CACHE_ROOT), train=True, download=True)
    te = cls(str(CACHE_ROOT), train=False, download=True)
    return to_split(tr.data.numpy(), tr.targets.numpy()), to_split(te.data.numpy(), te.targets.numpy())


def idx_loader(slug: str, tv_name: str) -> Loader:
    """Loader for an MNIST-like dataset stored as IDX files."""

    def load(source: str, data_root: Optional[str], info: DatasetInfo) -> Tuple[Split, Split, str, Optional[str]]:
        # The embedded subset needs nothing from disk but the package.
        if source == "embedded":
            if slug != "fashion-mnist":
                raise ValueError(f"dataset {slug!r} has no embedded subset; use --data-source full")
            with np.load(EMBEDDED) as z:
                return (to_split(z["x_train"], z["y_train"]), to_split(z["x_test"], z["y_test"]),
                        f"embedded:{EMBEDDED.name}", None)
        subdirs = ["", slug, tv_name, f"{tv_name}/raw", f"{slug}/raw"]
        tried = []
        # 1. --data-root / $BENCH_DATA_ROOT.
        for root in _root_candidates(data_root):
            tried.append(str(root))
            folder = find_idx_folder(root, subdirs)
            if folder is not None:
                return (*load_idx_folder(folder), str(folder), None)
        # 2. Debian's packaged copy.
        folder = find_idx_folder(DEBIAN_ROOT, [slug])
        tried.append(str(DEBIAN_ROOT / slug))
        if folder is not None:
            return (*load_idx_folder(folder), str(folder), None)
        # 3. torchvision download.
        looked_for = ", ".join(f"{name}[.gz]" for name in IDX_NAMES)
        return _download_or_fail(slug, tried, lambda: torchvision_download(slug),
                                 f" (apt-get install dataset-{slug}); looked for {looked_for} in each root and its "
                                 f"{', '.join(d for d in subdirs if d)} folders")

    return load


def _download_or_fail(slug: str, tried: List[str], download: Callable[[], Tuple[Split, Split]],
                      debian_hint: str) -> Tuple[Split, Split, str, Optional[str]]:
    """The last resort, torchvision's download; its failure names every source tried (the last one is Debian's)."""
    try:
        return (*download(), f"torchvision:{CACHE_ROOT}", None)
    except Exception as exc:  # noqa: BLE001 - reported with every source tried
        raise DataNotFoundError(
            f"full {slug} data not found: tried --data-root/${ENV_ROOT} ({', '.join(tried[:-1]) or 'unset'}), "
            f"Debian {tried[-1]}{debian_hint}, torchvision download ({type(exc).__name__})"
        ) from exc


def file_loader(slug: str) -> Loader:
    """Loader for CIFAR-10/100 and SVHN: their original file formats under a root, else torchvision's download."""

    def load(source: str, data_root: Optional[str], info: DatasetInfo) -> Tuple[Split, Split, str, Optional[str]]:
        if source == "embedded":
            raise ValueError(f"dataset {slug!r} has no embedded subset; use --data-source full")
        tried = []
        # 1. --data-root / $BENCH_DATA_ROOT, then Debian's folder: each root itself and its <dataset> subfolder.
        for root in _root_candidates(data_root) + [DEBIAN_ROOT / slug]:
            tried.append(str(root))
            for folder in (root, root / slug):
                found = read_svhn(folder) if slug == "svhn" else read_cifar(folder, CIFAR10 if slug == "cifar10" else CIFAR100)
                if found is not None:
                    (xtr, ytr), (xte, yte), where = found
                    return Split(xtr, ytr), Split(xte, yte), where, None
        # 2. torchvision's download into the cache (it checks the archives' md5).
        return _download_or_fail(slug, tried, lambda: _torchvision_download(slug), f"; looked for {expected_files(slug)}")

    return load


def image_folder_loader(source: str, data_root: Optional[str], info: DatasetInfo
                         ) -> Tuple[Split, Split, str, Optional[str]]:
    """Loader of a user's ImageFolder tree: ``--data-root`` (then ``$BENCH_DATA_ROOT``) must hold it; no fallbacks."""
    if source == "embedded":
        raise ValueError("dataset 'imagefolder' has no embedded subset; use --data-source full")
    roots = _root_candidates(data_root)
    if not roots:
        raise DataNotFoundError(f"dataset 'imagefolder' reads your own images: give --data-root DIR (or "
                                f"${ENV_ROOT}) holding {expected_layout()}")
    for root in roots:
        found = read_image_folder(root, info.image_size, info.num_classes)
        if found is not None:
            (xtr, ytr), (xte, yte), where, files = found
            return Split(xtr, ytr), Split(xte, yte), where, files
    raise DataNotFoundError(f"no image folder found: looked for {expected_layout()} in "
                            f"{', '.join(str(r) for r in roots)}")


def _torchvision_download(slug: str) -> Tuple[Split, Split]:
    """CIFAR-10/100 or SVHN downloaded by torchvision into the cache."""
    import torchvision.datasets as tvd

    if slug == "svhn":
        tr, te = (tvd.SVHN(str(CACHE_ROOT), split=split, download=True) for split in ("train", "test"))
        return (Split(torch.from_numpy(tr.data), torch.from_numpy(tr.labels).long()),
                Split(torch.from_numpy(te.data), torch.from_numpy(te.labels).long()))
    cls = tvd.CIFAR10 if slug == "cifar10" else tvd.CIFAR100
    tr, te = cls(str(CACHE_ROOT), train=True, download=True), cls(str(CACHE_ROOT), train=False, download=True)
    return to_split(tr.data, tr.targets), to_split(te.data, te.targets)
