"""Run spec: stable hash, defaults omitted, unknown keys and bad values rejected."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd
import pytest

from bench.core.config import load_yaml
from bench.core.io import digest
from bench.harness import NOT_ROW_COLUMNS
from bench.methods.ticket import read_spec
from bench.reporting.cells import CONFIG_COLUMNS
from bench.spec import PROTOCOL, ROW_NAMES, RUNTIME_GROUPS, SPEC_GROUPS, RunSpec, spec_fields
from bench.train import SPEC_TRAIN_FIELDS


def test_run_id_is_pinned() -> None:
    # Pinned so an accidental change of the hashing scheme (which would orphan
    # every stored run) fails loudly.
    assert RunSpec().run_id == "4c3795ce6166"
    assert RunSpec().resolve().run_id == "671fb7998ffc"
    assert RunSpec(sparsity=0.5, seed=3).run_id == RunSpec(seed=3, sparsity=0.5).run_id


def test_defaults_are_left_out_of_the_hash() -> None:
    spec = RunSpec(width=0.5, sparsity=0.9)
    assert spec.canonical() == {"protocol": PROTOCOL}
    assert spec.run_id == RunSpec().run_id
    assert RunSpec(width=2.0).canonical() == {"width": 2.0, "protocol": PROTOCOL}


def test_protocol_is_part_of_every_run_id() -> None:
    """A default spec of this protocol never hashes like one of protocol 1 (an empty canonical dict)."""
    assert RunSpec().run_id != digest({})
    assert RunSpec(seed=3).run_id != digest({"seed": 3})
    with pytest.raises(ValueError, match="protocol 1 runs were made by an older version"):
        RunSpec(protocol=1)


def test_runtime_fields_do_not_change_identity() -> None:
    base = RunSpec()
    other = RunSpec(eval_attacks=("pgd20",), n_eval=10, n_eval_aa=5, device="cpu")
    assert base.run_id == other.run_id
    assert RunSpec(seed=1).run_id != base.run_id


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunSpec().sparsity = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "nope"}, "unknown method 'nope'; choices:"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; choices:"),
    ({"arch": "vgg99"}, "unknown arch 'vgg99'; choices:"),
    ({"eval_attacks": ("pgd20", "bogus")}, "unknown attack 'bogus'; choices:"),
    ({"sparsity": 1.0}, "sparsity must be in"),
    ({"sparsity": -0.1}, "sparsity must be in"),
    ({"sparsity": math.nan}, "sparsity must be in"),
    ({"eps": 0.0}, "eps must be in"),
    ({"eps": -0.1}, "eps must be in"),
    ({"width": 0.0}, "width must be > 0"),
    ({"dataset": "mnist", "data_source": "embedded"}, None),
])
def test_bad_values_raise_value_error(kwargs: dict, message: str) -> None:
    if message is None:
        # Accepted at spec level; the loader rejects it (tested in test_cli).
        RunSpec(**kwargs)
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RunSpec(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown run spec key\\(s\\): prune_rate"):
        RunSpec.from_dict({"prune_rate": 0.1})


def test_from_dict_coerces_and_roundtrips() -> None:
    spec = RunSpec.from_dict({"sparsity": "0.8", "epochs": "3", "eval_attacks": "pgd20,cw20", "hparams": {"weight_init": "kaiming-normal"}})
    assert spec.sparsity == 0.8 and spec.epochs == 3 and spec.eval_attacks == ("pgd20", "cw20")
    again = RunSpec.from_dict(spec.to_dict())
    assert again == spec and again.run_id == spec.run_id


def test_method_hparams_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown rst hparams key"):
        RunSpec(hparams={"k": 0.1})


def test_resolve_fills_dataset_eps() -> None:
    assert RunSpec().resolve().eps == 0.1
    assert RunSpec(dataset="mnist").resolve().eps == 0.3
    assert RunSpec(dataset="cifar10", arch="resnet18").resolve().eps == pytest.approx(8 / 255)


def test_yaml_must_be_mapping(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        load_yaml(str(p))
    p.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_yaml(str(p))


ROOT = Path(__file__).resolve().parents[1]


def test_every_field_has_a_group_and_the_lists_derive_from_them() -> None:
    """Issue 32: the spec's fields come in groups; the training fields and the configuration columns are
    derived from them (CONFIG_COLUMNS lacked craft_bn while it was typed by hand)."""
    assert all(f.metadata.get("group") in SPEC_GROUPS for f in dataclasses.fields(RunSpec))
    assert set(spec_fields(*SPEC_GROUPS)) == {f.name for f in dataclasses.fields(RunSpec)}
    # Every training field reaches a training stage, except the choice of epoch its caller applies.
    assert set(SPEC_TRAIN_FIELDS) == set(spec_fields("training", "threat")) - {"select"}
    # Every spec field a row copies is a configuration column, except the replicate (the seed a cell pools).
    copied = {ROW_NAMES.get(n, n) for n in spec_fields(*SPEC_GROUPS) if n not in NOT_ROW_COLUMNS or n == "sparsity"}
    assert copied - set(CONFIG_COLUMNS) == set(spec_fields("replicate"))
    assert {"craft_bn", "select", "protocol", "hparams", "target_sparsity"} <= set(CONFIG_COLUMNS)
    with pytest.raises(ValueError, match="unknown spec group"):
        spec_fields("trainig")


def committed_spec_files() -> List[Path]:
    """Every spec.json committed under results/ (run folders and reference tickets)."""
    return sorted((ROOT / "results").rglob("spec.json"))


@pytest.mark.parametrize("path", committed_spec_files(), ids=lambda p: str(p.parent.name))
def test_every_committed_run_folder_hashes_to_its_name(path: Path) -> None:
    """Run ids stay exactly what they are: a committed spec.json rebuilt by this version has its folder's id."""
    assert read_spec(path.parent).run_id == path.parent.name


def committed_rows() -> List[Tuple[str, str, Dict[str, str]]]:
    """(file, run_id, first row) of each run in the committed rows files, protocol 2 or later (rows without
    the column were made by protocol 1, whose ids this version does not rebuild)."""
    found = []
    for csv_path in sorted((ROOT / "results").rglob("runs.csv")):
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        if "protocol" not in df:
            continue
        df = df[(df["attack"] != "fmn") & (df["protocol"] != "") & (df["method"] != "zoo")]
        for run_id, row in df.groupby("run_id").first().iterrows():
            found.append((str(csv_path.relative_to(ROOT)), str(run_id), dict(row)))
    return found


def test_every_committed_row_rebuilds_its_run_id() -> None:
    """The rows hold the spec (its configuration columns, the seed and the hyperparameters): rebuilt, each hashes
    to the row's run id, so grouping the spec's fields changed no id."""
    rows = committed_rows()
    assert len(rows) >= 50
    skip = set(spec_fields(*RUNTIME_GROUPS)) | {"hparams", "sparsity"}
    for where, run_id, row in rows:
        data: Dict[str, object] = {k: row[k] for k in spec_fields(*SPEC_GROUPS) if k not in skip and row.get(k, "") != ""}
        data["sparsity"] = row["target_sparsity"]
        data["hparams"] = json.loads(row["hparams"])
        assert RunSpec.from_dict(data).resolve().run_id == run_id, (where, run_id)
