"""What the data modules share: a dataset's facts, a split of images and labels, the bundle a run trains and
is evaluated on, and a loader's signature."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

# Where a dataset's images come from: the embedded subset, full data on disk, or the first that exists.
DATA_SOURCES = ("auto", "embedded", "full")


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



def to_split(x: np.ndarray, y: np.ndarray) -> Split:
    """numpy uint8 images (N,H,W) or (N,H,W,C) to a Split in NCHW."""
    xt = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True))
    if xt.dim() == 3:
        xt = xt.unsqueeze(1)
    elif xt.dim() == 4 and xt.shape[-1] in (1, 3):
        xt = xt.permute(0, 3, 1, 2).contiguous()
    return Split(xt, torch.as_tensor(np.array(y, dtype=np.int64, copy=True)))
