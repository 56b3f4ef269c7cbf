"""File and identity helpers every layer shares: one atomic write, digests, file-name slugs.

A leaf module. :func:`atomic_write` writes to a unique temporary file in the
target's folder, flushes it to disk and renames it over the target, so a
reader sees the old file or the new one, never a partial one, and concurrent
writers never share a temporary name.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np
import torch

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A unique temporary path next to ``path``; renamed over it (after fsync) when the block succeeds.

    On an exception the temporary file is removed and the target is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # Flush the new content to disk before it replaces the target.
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: PathLike, data: Union[bytes, str]) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    blob = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def atomic_json(path: PathLike, data: Any, indent: int = 1) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    atomic_write(path, json.dumps(data, indent=indent, default=str))


def atomic_save(path: PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_with(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a unique temporary path, then rename it over ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_npz(path: PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` file atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write(path, buf.getvalue())


def digest(data: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``data`` (keys sorted; unknown types as text)."""
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def mix_seed(*parts: Any) -> int:
    """A 60-bit seed from any JSON-able parts (stable across runs and machines)."""
    return int(digest(list(parts), 15), 16)


def tensor_digest(t: torch.Tensor) -> str:
    """Short sha256 of a tensor's values."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def slug(name: str) -> str:
    """File-name-safe form of a name (attack names carry ':' and '=')."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def model_fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """Digest of every parameter and buffer (detects any change to the model)."""
    return {k: tensor_digest(v) for k, v in model.state_dict().items()}


def file_sha256(path: PathLike) -> str:
    """Full sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same resolved path, or the same inode through a link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` (a flag) when an output path is one of the command's input files.

    No command may replace the file it reads: ``bench table runs.csv -o runs.csv`` would lose the rows.
    """
    input_paths = [Path(i) for i in inputs]
    for out in outputs:
        for src in input_paths:
            if _same_file(Path(out), src):
                raise ValueError(f"{what} {out} is one of this command's inputs ({src}); it would be overwritten: "
                                 f"write to another file")
