"""Dataset registry, the embedded Fashion-MNIST subset and full-data resolution.

Every dataset is held in memory as uint8 images and int64 labels; batches are
turned into float tensors in [0,1] (normalisation lives in the model). The
training data is split into train and validation once per seed, so model
selection never sees the test set.

Full data is found in this order: ``--data-root`` or ``$BENCH_DATA_ROOT``,
then Debian's ``/usr/share/datasets/<name>`` (``dataset-fashion-mnist``),
then a torchvision download into ``~/.cache/robust-tickets``; if all fail the
error names all three.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from bench.data.formats import CIFAR10, CIFAR100, expected_files, read_cifar, read_svhn
from bench.data.imagefolder import expected_layout, read_image_folder
from bench.registry import Registry

# Where a dataset's images come from: the embedded subset, full data on disk, or the first that exists.
DATA_SOURCES = ("auto", "embedded", "full")
EMBEDDED = Path(__file__).resolve().parent / "fashion_mnist_subset.npz"
ENV_ROOT = "BENCH_DATA_ROOT"
DEBIAN_ROOT = Path("/usr/share/datasets")
CACHE_ROOT = Path.home() / ".cache" / "robust-tickets"


class DataNotFoundError(ValueError):
    """Full data was requested and no source had it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    default_eps: float
    has_embedded: bool = False
    augment: bool = False
    # Images in the full training and test sets (before the validation split); 0: the user's folder decides.
    train_size: int = 0
    test_size: int = 0
    # A user's folder of images: classes and size come from the spec (num_classes 0 here), not from the registry.
    from_folder: bool = False


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64, on the CPU."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())

    def subset(self, idx: torch.Tensor) -> "Split":
        """Rows ``idx`` of this split."""
        return Split(self.x[idx], self.y[idx])

    def head(self, n: int) -> "Split":
        """The first ``n`` examples (all when ``n`` is 0 or larger than the split)."""
        return self if n <= 0 or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class DataBundle:
    """Train / validation / test splits plus the dataset's facts and provenance."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    source: str
    # A hash of the files a user's folder held (None for the registry's datasets, whose content is fixed).
    fingerprint: Optional[str] = None


# A loader gets the data source, the --data-root and the dataset's facts (a folder dataset's size and classes
# filled in from the spec); it returns train, test, where they were read and the files' fingerprint (or None).
Loader = Callable[[str, Optional[str], DatasetInfo], Tuple[Split, Split, str, Optional[str]]]
DATASETS: Registry[Tuple[DatasetInfo, Loader]] = Registry("dataset")


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


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    """numpy uint8 images (N,H,W) or (N,H,W,C) to a Split in NCHW."""
    xt = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True))
    if xt.dim() == 3:
        xt = xt.unsqueeze(1)
    elif xt.dim() == 4 and xt.shape[-1] in (1, 3):
        xt = xt.permute(0, 3, 1, 2).contiguous()
    return Split(xt, torch.as_tensor(np.array(y, dtype=np.int64, copy=True)))


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx_folder(root: Path, subdirs: List[str]) -> Optional[Path]:
    """A folder under ``root`` that holds the four IDX files (gzipped or not)."""
    for sub in subdirs:
        folder = root / sub if sub else root
        if all((folder / n).exists() or (folder / (n + ".gz")).exists() for n in IDX_NAMES):
            return folder
    return None


def _load_idx_folder(folder: Path) -> Tuple[Split, Split]:
    """Train and test splits from a folder of the four IDX files."""
    def pick(name: str) -> Path:
        gz = folder / (name + ".gz")
        return gz if gz.exists() else folder / name

    train = _to_split(read_idx(pick(IDX_NAMES[0])), read_idx(pick(IDX_NAMES[1])))
    test = _to_split(read_idx(pick(IDX_NAMES[2])), read_idx(pick(IDX_NAMES[3])))
    return train, test


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
    return _to_split(tr.data.numpy(), tr.targets.numpy()), _to_split(te.data.numpy(), te.targets.numpy())


def _idx_loader(slug: str, tv_name: str) -> Loader:
    """Loader for an MNIST-like dataset stored as IDX files."""

    def load(source: str, data_root: Optional[str], info: DatasetInfo) -> Tuple[Split, Split, str, Optional[str]]:
        # The embedded subset needs nothing from disk but the package.
        if source == "embedded":
            if slug != "fashion-mnist":
                raise ValueError(f"dataset {slug!r} has no embedded subset; use --data-source full")
            with np.load(EMBEDDED) as z:
                return (_to_split(z["x_train"], z["y_train"]), _to_split(z["x_test"], z["y_test"]),
                        f"embedded:{EMBEDDED.name}", None)
        subdirs = ["", slug, tv_name, f"{tv_name}/raw", f"{slug}/raw"]
        tried = []
        # 1. --data-root / $BENCH_DATA_ROOT.
        for root in _root_candidates(data_root):
            tried.append(str(root))
            folder = _find_idx_folder(root, subdirs)
            if folder is not None:
                return (*_load_idx_folder(folder), str(folder), None)
        # 2. Debian's packaged copy.
        folder = _find_idx_folder(DEBIAN_ROOT, [slug])
        tried.append(str(DEBIAN_ROOT / slug))
        if folder is not None:
            return (*_load_idx_folder(folder), str(folder), None)
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


def _file_loader(slug: str) -> Loader:
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


def _image_folder_loader(source: str, data_root: Optional[str], info: DatasetInfo
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
    return _to_split(tr.data, tr.targets), _to_split(te.data, te.targets)


MNIST_STATS = ((0.1307,), (0.3081,))
FMNIST_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DATASETS.add("fashion-mnist",
             (DatasetInfo("fashion-mnist", 10, 1, 28, *FMNIST_STATS, 0.1, has_embedded=True, train_size=60000, test_size=10000),
              _idx_loader("fashion-mnist", "FashionMNIST")),
             "Fashion-MNIST 28x28 grey, 10 classes; default (embedded 6k/1k subset, or full 60k/10k)")
DATASETS.add("mnist", (DatasetInfo("mnist", 10, 1, 28, *MNIST_STATS, 0.3, train_size=60000, test_size=10000),
                       _idx_loader("mnist", "MNIST")),
             "MNIST 28x28 grey, 10 classes (full data only)")
DATASETS.add("cifar10", (DatasetInfo("cifar10", 10, 3, 32, *CIFAR_STATS, 8 / 255, augment=True, train_size=50000, test_size=10000),
                         _file_loader("cifar10")),
             "CIFAR-10 32x32 colour, 10 classes (torchvision)")
DATASETS.add("cifar100", (DatasetInfo("cifar100", 100, 3, 32, *CIFAR100_STATS, 8 / 255, augment=True, train_size=50000,
                                      test_size=10000),
                          _file_loader("cifar100")),
             "CIFAR-100 32x32 colour, 100 classes (torchvision)")
DATASETS.add("svhn", (DatasetInfo("svhn", 10, 3, 32, *SVHN_STATS, 8 / 255, train_size=73257, test_size=26032),
                      _file_loader("svhn")),
             "SVHN 32x32 colour digits, 10 classes (torchvision)")
# A user's own images: 224x224 (--image-size), ImageNet's statistics and RobustBench's ImageNet L-inf budget 4/255.
DATASETS.add("imagefolder", (DatasetInfo("imagefolder", 0, 3, 224, *IMAGENET_STATS, 4 / 255, augment=True,
                                         from_folder=True),
                             _image_folder_loader),
             "your own images: --data-root DIR with train/<class>/ and val/<class>/ (ImageNet layout); "
             "needs --num-classes; --image-size (default 224)")


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name`` (ValueError listing choices if unknown)."""
    return DATASETS.get(name)[0]


def resolve_source(name: str, source: str) -> str:
    """'auto' means the embedded subset when the dataset has one, else full data."""
    if source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {source!r}; choices: {', '.join(DATA_SOURCES)}")
    if source == "auto":
        return "embedded" if dataset_info(name).has_embedded else "full"
    return source


def load_data(name: str, source: str = "auto", data_root: Optional[str] = None, val_fraction: float = 0.1,
              seed: int = 0, n_train: int = 0, info: Optional[DatasetInfo] = None) -> DataBundle:
    """Load ``name``, split a seeded validation set off the training data, optionally cap the rest.

    ``info`` replaces the registry's facts (a folder dataset's classes and image size, from the spec).
    """
    registered, loader = DATASETS.get(name)
    info = info or registered
    if info.from_folder and info.num_classes <= 0:
        raise ValueError(f"dataset {name!r} needs num_classes (--num-classes: the number of class folders)")
    train, test, origin, files = loader(resolve_source(name, source), data_root, info)
    # Hold out a validation split from training data (model selection only).
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(len(train), generator=g)
    n_val = int(round(val_fraction * len(train)))
    rest = perm[n_val:] if n_train <= 0 else perm[n_val : n_val + n_train]
    return DataBundle(info, train.subset(rest), train.subset(perm[:n_val]), test, origin, files)


def to_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to float in [0,1] on ``device``."""
    return x.to(device, non_blocking=True).float().div_(255.0)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4) and horizontal flip, CIFAR style, on a float batch."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batch_starts(n: int, batch_size: int, min_last: int = 1) -> List[int]:
    """First index of each batch of ``n`` examples; a last batch smaller than ``min_last`` joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    return starts


def batches(split: Split, batch_size: int, device: torch.device, generator: Optional[torch.Generator] = None,
            augment: bool = False, min_last: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Float batches in [0,1]; shuffled when a generator is given. A last batch smaller than ``min_last`` joins
    the one before it (BatchNorm over features cannot train on a batch of one example)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = batch_starts(n, batch_size, min_last)
    for i, start in enumerate(starts):
        stop = n if i == len(starts) - 1 else start + batch_size
        idx = order[start:stop]
        x = to_float(split.x[idx], device)
        if augment and generator is not None:
            x = augment_batch(x, generator)
        yield x, split.y[idx].to(device)
