"""The frozen-weights sanity flag end to end: clean for a real RST, raised when weights move."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from bench.cli import main
from bench.harness import run_spec
from bench.spec import RunSpec

KW = dict(method="rst", arch="mlp", width=0.2, sparsity=0.8, epochs=1, train_steps=1, n_train=300, n_eval=40,
          eval_attacks=("pgd20",), device="cpu")


def test_rst_records_fingerprint_and_flags_moved_weights(tmp_path: Path) -> None:
    out = tmp_path / "res"
    rows = run_spec(RunSpec(**KW), out, show=False)
    assert "frozen_moved" not in ";".join(rows["flags"].fillna(""))
    run_dir = out / "runs" / rows["run_id"][0]
    assert json.loads((run_dir / "meta.json").read_text())["frozen_fingerprint"]
    # Tamper with one frozen weight of the stored ticket, then evaluate it again.
    state = torch.load(run_dir / "ticket.pt", weights_only=True)
    key = next(k for k in state if k.endswith(".weight") and state[k].dim() == 2)
    state[key][0, 0] += 1.0
    torch.save(state, run_dir / "ticket.pt")
    assert main(["eval", str(run_dir), "--attacks", "cw20"]) == 0
    df = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert "frozen_moved" in df.loc[df["attack"] == "cw20", "flags"].iloc[0]
