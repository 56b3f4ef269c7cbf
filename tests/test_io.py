"""The one atomic write: unique temporary names, nothing half-written, nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from bench.core import paths
from bench.core.io import atomic_json, atomic_path, digest, slug


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    """Many threads writing the same file at once: no error, a complete file, no temporary left (fixed names failed)."""
    target = tmp_path / "spec.json"
    errors: List[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                atomic_json(target, {"writer": i, "payload": "x" * 1000})
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["payload"] == "x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    atomic_json(target, {"old": True})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_digest_and_slug() -> None:
    """Key order does not change a digest; slugs are file-name safe."""
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert len(digest({"a": 1}, 10)) == 10
    assert slug("pgd:steps=50/x") == "pgd_steps_50_x"


def test_paths_name_every_artifact(tmp_path: Path) -> None:
    """A run is finished once its spec, ticket and meta exist."""
    run = paths.run_dir(tmp_path, "abc123def456")
    assert paths.out_of_run(run) == tmp_path
    run.mkdir(parents=True)
    for make in (paths.spec, paths.ticket):
        make(run).write_text("x")
        assert not paths.ticket_finished(run)
    paths.meta(run).write_text("{}")
    assert paths.ticket_finished(run)


def test_config_is_a_leaf_without_torch() -> None:
    """Reading configuration imports neither torch nor the rest of the package."""
    code = "import sys, bench.core.config; print('torch' in sys.modules, 'bench.harness' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_store_survives_a_kill_between_its_two_files(tmp_path: Path) -> None:
    """Arrays written, side-car lost (a SIGKILL between the writes): the store still loads its arrays."""
    import torch

    from bench.core.store import Store

    spec = {"tried": (torch.bool, False, ())}
    store = Store(tmp_path / "clean", spec, {})
    store.grow(4)
    store["tried"][:2] = True
    store.save()
    (tmp_path / "clean.json").unlink()
    again = Store(tmp_path / "clean", spec, {})
    assert again["tried"].tolist() == [True, True, False, False]


WRITER = """
import sys, torch
from bench.core.io import atomic_save, atomic_write
target, kind = sys.argv[1], sys.argv[2]
blobs = [bytes([65]) * 4_000_000, bytes([66]) * 3_000_000]
print("ready", flush=True)
i = 0
while True:
    if kind == "bytes":
        atomic_write(target, blobs[i % 2])
    else:
        atomic_save(target, {"w": torch.full((500_000,), float(i % 2))})
    i += 1
"""


@pytest.mark.parametrize("kind", ["bytes", "torch"])
def test_a_sigkill_during_writes_never_leaves_a_torn_file(kind: str, tmp_path: Path) -> None:
    """A writer killed (SIGKILL) at random moments while rewriting one file: the file is always one whole version."""
    import random
    import signal
    import time

    import torch

    target = tmp_path / ("blob.bin" if kind == "bytes" else "ticket.pt")
    rng = random.Random(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not target.exists():
            continue
        if kind == "bytes":
            data = target.read_bytes()
            assert data in (b"A" * 4_000_000, b"B" * 3_000_000), f"torn file of {len(data)} bytes"
        else:
            w = torch.load(target, weights_only=True)["w"]
            assert w.numel() == 500_000 and w.unique().numel() == 1
    assert target.exists(), "the writer never finished one write in 4 tries"
