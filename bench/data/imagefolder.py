"""A user's own images in torchvision's ``ImageFolder`` layout, decoded once into memory.

``--data-root DIR`` holds ``train/`` and ``val/`` (or ``test/``), each with one
folder per class (ImageNet's layout). Classes are indexed in sorted folder-name
order, as torchvision's ``ImageFolder`` does, and both splits must hold the
same class folders. Every image is read by torchvision (any extension it
accepts), converted to RGB, resized so its shorter side is ``size * 256/224``
and centre-cropped to ``size`` x ``size`` -- RST's ImageNet evaluation
transform (``Resize(256)``, ``CenterCrop(224)``) at ``size`` 224. The crops are
kept as uint8, so the folder must fit in memory at that size; a fingerprint of
the files (paths and sizes) tells two folders apart.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torchvision.datasets as tvd
import torchvision.transforms as T

from bench.core.io import digest

# Split folders: training images, then the first of these that exists for the test images.
TRAIN_DIR = "train"
TEST_DIRS = ("val", "test")
# Resize the shorter side to size * 256/224 before the centre crop (torchvision's ImageNet evaluation ratio).
RESIZE_RATIO = 256 / 224
# Decoded images may use at most this fraction of the machine's memory.
MEMORY_FRACTION = 0.5


def transform(size: int) -> T.Compose:
    """The deterministic transform every (RGB, as torchvision's loader gives) image goes through: resize, centre
    crop, uint8 CHW tensor."""
    return T.Compose([T.Resize(round(size * RESIZE_RATIO)), T.CenterCrop(size), T.PILToTensor()])


def _split_folders(root: Path) -> Optional[Tuple[Path, Path]]:
    """``root``'s train folder and test folder, or None when ``root`` lacks either."""
    test = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if not (root / TRAIN_DIR).is_dir() or test is None:
        return None
    return root / TRAIN_DIR, test


def _folder(path: Path) -> tvd.ImageFolder:
    """torchvision's index of one split folder; its complaints become ValueErrors naming the folder."""
    try:
        return tvd.ImageFolder(str(path))
    except OSError as exc:  # FileNotFoundError included: torchvision raises it for a class folder with no image
        raise ValueError(f"{path}: {exc}") from None


def fingerprint(*folders: tvd.ImageFolder) -> str:
    """A short hash of every image's path (relative to its split folder's parent) and size in bytes."""
    items: List[Tuple[str, int]] = []
    for f in folders:
        base = Path(f.root).parent
        items += [(str(Path(p).relative_to(base)), os.path.getsize(p)) for p, _ in f.samples]
    return digest(sorted(items))


def _decode(folder: tvd.ImageFolder, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``folder`` through :func:`transform`, stacked, with its class index."""
    tf = transform(size)
    x = torch.empty((len(folder.samples), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        try:
            x[i] = tf(folder.loader(path))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not an image torchvision can read ({type(exc).__name__}: {exc})") from None
    y = torch.as_tensor(np.array(folder.targets, dtype=np.int64))
    return x, y


def read_image_folder(root: Path, size: int, num_classes: int
                      ) -> Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor], str, str]]:
    """Train and test (images, labels) of the folder ``root``, where they were read, and their fingerprint.

    None when ``root`` has no ``train/`` and ``val/``|``test/``; a ValueError naming the folder when the two
    disagree on their classes, the class count is not ``num_classes``, or the images would not fit in memory.
    """
    found = _split_folders(root)
    if found is None:
        return None
    train, test = (_folder(p) for p in found)
    # Both splits index the same classes, and as many as the spec says.
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(f"{root}: {found[0].name}/ and {found[1].name}/ must hold the same class folders "
                         f"(only in {found[0].name}/: {only_train[:5]}; only in {found[1].name}/: {only_test[:5]})")
    if len(train.classes) != num_classes:
        raise ValueError(f"{root}: {found[0].name}/ holds {len(train.classes)} class folders but num_classes is "
                         f"{num_classes} (set --num-classes {len(train.classes)})")
    # The decoded images must fit in memory.
    n = len(train.samples) + len(test.samples)
    need = n * 3 * size * size
    have = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION)
    if need > have:
        raise ValueError(f"{root}: {n} images at {size}x{size} need {need / 2**30:.1f} GiB in memory, more than "
                         f"{have / 2**30:.1f} GiB (half of this machine's); lower --image-size")
    return _decode(train, size), _decode(test, size), str(root), fingerprint(train, test)


def expected_layout() -> str:
    """What :func:`read_image_folder` looks for, for error messages."""
    return f"{TRAIN_DIR}/<class>/<image> and {'|'.join(TEST_DIRS)}/<class>/<image>"
