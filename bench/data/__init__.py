"""Dataset registry: every dataset's facts and loader, and :func:`load_data`.

Every dataset is held in memory as uint8 images and int64 labels; batches are
turned into float tensors in [0,1] (normalisation lives in the model;
:mod:`bench.data.batching`). The training data is split into train and
validation once per seed, so model selection never sees the test set. Where
full data is found: :mod:`bench.data.sources`; file formats:
:mod:`bench.data.idx`, :mod:`bench.data.formats`, :mod:`bench.data.imagefolder`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from bench.core.registry import Registry
from bench.data.base import DATA_SOURCES, DataBundle, DataNotFoundError, DatasetInfo, Loader, Split, to_split
from bench.data.batching import augment_batch, batch_starts, batches, to_float
from bench.data.idx import read_idx
from bench.data.sources import EMBEDDED, file_loader, idx_loader, image_folder_loader

__all__ = ["DATASETS", "DATA_SOURCES", "EMBEDDED", "DataBundle", "DataNotFoundError", "DatasetInfo", "Loader", "Split",
           "augment_batch", "batch_starts", "batches", "dataset_info", "load_data", "read_idx", "resolve_source",
           "to_float", "to_split"]

DATASETS: Registry[Tuple[DatasetInfo, Loader]] = Registry("dataset", entry_points="robust_tickets.datasets")

# Per-channel normalisation statistics (applied inside the model), then one registration per dataset.
MNIST_STATS = ((0.1307,), (0.3081,))
FMNIST_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DATASETS.add("fashion-mnist",
             (DatasetInfo("fashion-mnist", 10, 1, 28, *FMNIST_STATS, 0.1, has_embedded=True, train_size=60000, test_size=10000),
              idx_loader("fashion-mnist", "FashionMNIST")),
             "Fashion-MNIST 28x28 grey, 10 classes; default (embedded 6k/1k subset, or full 60k/10k)")
DATASETS.add("mnist", (DatasetInfo("mnist", 10, 1, 28, *MNIST_STATS, 0.3, train_size=60000, test_size=10000),
                       idx_loader("mnist", "MNIST")),
             "MNIST 28x28 grey, 10 classes (full data only)")
DATASETS.add("cifar10", (DatasetInfo("cifar10", 10, 3, 32, *CIFAR_STATS, 8 / 255, augment=True, train_size=50000, test_size=10000),
                         file_loader("cifar10")),
             "CIFAR-10 32x32 colour, 10 classes (torchvision)")
DATASETS.add("cifar100", (DatasetInfo("cifar100", 100, 3, 32, *CIFAR100_STATS, 8 / 255, augment=True, train_size=50000,
                                      test_size=10000),
                          file_loader("cifar100")),
             "CIFAR-100 32x32 colour, 100 classes (torchvision)")
DATASETS.add("svhn", (DatasetInfo("svhn", 10, 3, 32, *SVHN_STATS, 8 / 255, train_size=73257, test_size=26032),
                      file_loader("svhn")),
             "SVHN 32x32 colour digits, 10 classes (torchvision)")
# A user's own images: 224x224 (--image-size), ImageNet's statistics and RobustBench's ImageNet L-inf budget 4/255.
DATASETS.add("imagefolder", (DatasetInfo("imagefolder", 0, 3, 224, *IMAGENET_STATS, 4 / 255, augment=True,
                                         from_folder=True),
                             image_folder_loader),
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
