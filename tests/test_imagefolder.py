"""A user's own images in ImageFolder layout, generated here: decoded exactly (solid colours survive resizing),
indexed as torchvision's ImageFolder indexes them, refused clearly when the layout is wrong, and run end to end."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets as tvd
import torchvision.transforms as T
from PIL import Image

from bench.cli import main
from bench.data import load_data
from bench.data.imagefolder import read_image_folder
from bench.nn.models import MODELS
from bench.spec import METHODS, RunSpec

CLASSES = ("cat", "dog", "eel")
RUN = ["--dataset", "imagefolder", "--num-classes", "3", "--image-size", "32", "--arch", "mlp", "--width", "0.1",
       "--epochs", "1", "--train-steps", "1", "--n-eval", "12", "--eval-attacks", "pgd20", "--device", "cpu",
       "--batch-size", "20"]


def solid(i: int, c: int) -> Tuple[int, int, int]:
    """The colour of image ``i`` of class ``c``: it encodes both, so a decoded pixel says which file it came from."""
    return (40 * c + 10, (7 * i) % 256, 255 - 20 * c)


def write_folder(root: Path, per_class: Dict[str, int], test_dir: str = "val", exts: Tuple[str, ...] = (".png",),
                 random: bool = False) -> None:
    """``root/train/<class>/`` and ``root/<test_dir>/<class>/`` of images of varied sizes (solid, or random pixels)."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        folder = test_dir if split == "test" else split
        for c, name in enumerate(CLASSES):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
                if random:
                    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                else:
                    pixels = np.broadcast_to(np.array(solid(i, c), dtype=np.uint8), (h, w, 3)).copy()
                Image.fromarray(pixels).save(root / folder / name / f"{i:03d}{exts[i % len(exts)]}")


def test_solid_images_decode_to_their_colour_and_class(tmp_path: Path) -> None:
    """Each decoded image is its file's colour at every pixel; labels are the sorted class folders' indices."""
    write_folder(tmp_path, {"train": 5, "test": 2}, exts=(".png", ".bmp"))
    found = read_image_folder(tmp_path, 24, 3)
    assert found is not None
    (xtr, ytr), (xte, yte), where, _files = found
    assert where == str(tmp_path)
    assert xtr.shape == (15, 3, 24, 24) and xte.shape == (6, 3, 24, 24) and xtr.dtype == torch.uint8
    for x, y, n in ((xtr, ytr, 5), (xte, yte, 2)):
        # Files are listed class by class, in name order within a class.
        assert y.tolist() == [c for c in range(3) for _ in range(n)]
        for k in range(len(y)):
            c, i = k // n, k % n
            expected = torch.tensor(solid(i, c), dtype=torch.uint8).view(3, 1, 1).expand(3, 24, 24)
            assert torch.equal(x[k], expected), (k, x[k, :, 0, 0].tolist(), solid(i, c))


def test_reads_as_torchvision_imagefolder_with_its_transforms(tmp_path: Path) -> None:
    """Random-pixel images of varied sizes: the same tensors as torchvision's ImageFolder with Resize + CenterCrop."""
    write_folder(tmp_path, {"train": 4, "test": 2}, test_dir="test", exts=(".png", ".jpg"), random=True)
    found = read_image_folder(tmp_path, 32, 3)
    assert found is not None
    (xtr, ytr), (xte, yte), _where, _files = found
    tf = T.Compose([T.Resize(37), T.CenterCrop(32), T.PILToTensor()])
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        ref = tvd.ImageFolder(str(tmp_path / split), transform=tf)
        assert ref.classes == list(CLASSES)
        assert y.tolist() == ref.targets
        for k in range(len(ref)):
            assert torch.equal(x[k], ref[k][0])


def test_load_data_splits_validation_from_train_and_keeps_the_folder_test_set(tmp_path: Path) -> None:
    """The spec's classes and size reach the bundle; validation comes from train/, the test set is val/ untouched."""
    write_folder(tmp_path, {"train": 10, "test": 3})
    spec = RunSpec(dataset="imagefolder", num_classes=3, image_size=16, arch="mlp")
    bundle = load_data(spec.dataset, spec.data_source, str(tmp_path), 0.2, 0, 0, spec.data_info)
    assert (bundle.info.num_classes, bundle.info.image_size, bundle.info.in_channels) == (3, 16, 3)
    assert len(bundle.train) + len(bundle.val) == 30 and len(bundle.val) == 6 and len(bundle.test) == 9
    assert bundle.test.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert bundle.fingerprint is not None and bundle.source == str(tmp_path)
    # The default size is 224, ImageNet's.
    assert RunSpec(dataset="imagefolder", num_classes=3).data_info.image_size == 224


def test_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    """Adding one image changes the fingerprint; re-reading the same files does not."""
    write_folder(tmp_path, {"train": 3, "test": 1})
    first = read_image_folder(tmp_path, 16, 3)
    again = read_image_folder(tmp_path, 16, 3)
    assert first is not None and again is not None and first[3] == again[3]
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "cat" / "extra.png")
    changed = read_image_folder(tmp_path, 16, 3)
    assert changed is not None and changed[3] != first[3]


@pytest.mark.parametrize("damage, message", [
    ("extra_val_class", "must hold the same class folders"),
    ("wrong_count", "holds 3 class folders but num_classes is 4"),
    ("broken_image", "is not an image torchvision can read"),
    ("empty_class", "Found no valid file"),
])
def test_bad_folders_are_refused_naming_the_folder(tmp_path: Path, damage: str, message: str) -> None:
    """A folder whose splits disagree, whose class count is not the spec's, or holding a broken image is a ValueError."""
    write_folder(tmp_path, {"train": 2, "test": 1})
    classes = 3
    if damage == "extra_val_class":
        (tmp_path / "val" / "fox").mkdir()
        Image.new("RGB", (20, 20)).save(tmp_path / "val" / "fox" / "0.png")
    elif damage == "wrong_count":
        classes = 4
    elif damage == "broken_image":
        (tmp_path / "train" / "dog" / "zz.png").write_bytes(b"not a png")
    else:
        (tmp_path / "train" / "fox").mkdir()
    with pytest.raises(ValueError, match=message) as info:
        read_image_folder(tmp_path, 16, classes)
    assert str(tmp_path) in str(info.value)


def test_no_folder_layout_is_none(tmp_path: Path) -> None:
    """A root without train/ and val/|test/ is not an image folder (the loader then names what it looked for)."""
    (tmp_path / "train").mkdir()
    assert read_image_folder(tmp_path, 16, 3) is None


def test_bench_run_end_to_end_and_refuses_another_folder_in_the_same_out(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """`bench run` on a folder: rows with the spec's shape; the same spec on different files in the same --out is refused."""
    write_folder(tmp_path / "a", {"train": 20, "test": 4})
    out = tmp_path / "out"
    assert main(["run", *RUN, "--data-root", str(tmp_path / "a"), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "runs.csv")
    assert rows["dataset"].tolist() == ["imagefolder"] and rows["n_eval"].tolist() == [12]
    assert (rows["num_classes"].tolist(), rows["image_size"].tolist()) == ([3], [32])
    run_dir = out / "runs" / rows["run_id"][0]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["data_source"] == str(tmp_path / "a") and len(meta["data_fingerprint"]) == 12
    # The same spec again on the same files reuses the ticket.
    assert main(["run", *RUN, "--data-root", str(tmp_path / "a"), "--out", str(out)]) == 0
    # Another folder with the same classes is another dataset: refused, nothing overwritten.
    write_folder(tmp_path / "b", {"train": 21, "test": 4})
    capsys.readouterr()
    assert main(["run", *RUN, "--data-root", str(tmp_path / "b"), "--out", str(out)]) == 2
    assert "holds a ticket of another image folder" in capsys.readouterr().err
    assert json.loads((run_dir / "meta.json").read_text()) == meta


@pytest.mark.parametrize("arch", MODELS.names())
@pytest.mark.parametrize("size", [16, 64, 224])
def test_every_architecture_takes_a_folder_spec(arch: str, size: int) -> None:
    """Each architecture built from an imagefolder spec (on the meta device) maps its image size to its classes."""
    spec = RunSpec(dataset="imagefolder", num_classes=5, image_size=size, arch=arch, width=0.25)
    with torch.device("meta"):
        model = METHODS.get(spec.method).build_empty(spec, "meta")
        out = model(torch.zeros(2, 3, size, size))
    assert tuple(out.shape) == (2, 5)
