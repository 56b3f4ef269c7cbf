"""Every artifact path of a run, a shared stage and a zoo evaluation, named in one place.

A leaf module (OpenLTH's ``foundations/paths.py`` is the model). Folders::

    <out>/runs.csv                       tidy result rows of every run
    <out>/runs/<run_id>/                 one run: spec.json, ticket.pt, meta.json, latency.json, status.json, log.txt,
                                         error.txt, eval/<model digest>/..., transfer.{csv,md,json},
                                         and each training stage's folder with last.pt
    <out>/stages/<name>-<key digest>/    a stage shared between runs: model.pt, stage.json, key.json, record.json
    <out>/zoo/<run_id>/                  a RobustBench zoo model's evaluation: spec.json, meta.json, eval/
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


def runs_csv(out: PathLike) -> Path:
    """The tidy rows file of an output folder."""
    return Path(out) / "runs.csv"


def runs_root(out: PathLike) -> Path:
    """The folder holding one folder per run."""
    return Path(out) / "runs"


def run_dir(out: PathLike, run_id: str) -> Path:
    """The folder of run ``run_id``."""
    return runs_root(out) / run_id


def out_of_run(run: PathLike) -> Path:
    """The output folder a run folder lives in (``<out>/runs/<run_id>`` -> ``<out>``)."""
    return Path(run).parent.parent


def in_output_folder(run: PathLike, run_id: str) -> bool:
    """Whether ``run`` sits where ``bench run`` puts run ``run_id`` (``<out>/runs/<run_id>``)."""
    path = Path(run).resolve()
    return path.name == run_id and path.parent.name == runs_root("").name


def stages_root(out: PathLike) -> Path:
    """The folder of the stages runs share."""
    return Path(out) / "stages"


def out_of_stages(stages: PathLike) -> Path:
    """The output folder a stages folder lives in (``<out>/stages`` -> ``<out>``)."""
    return Path(stages).parent


def external_dir(out: PathLike, run_id: str) -> Path:
    """The folder of one external model's evaluation (``bench eval --model``)."""
    return Path(out) / "external" / run_id


def zoo_dir(out: PathLike, run_id: str) -> Path:
    """The folder of one zoo-model evaluation."""
    return Path(out) / "zoo" / run_id


def spec(run: PathLike) -> Path:
    """The run's spec (JSON of every field)."""
    return Path(run) / "spec.json"


def ticket(run: PathLike) -> Path:
    """The run's ticket: a plain state dict."""
    return Path(run) / "ticket.pt"


def compact_ticket(run: PathLike) -> Path:
    """The run's compact ticket (seed or surviving weights, packed mask; :mod:`bench.methods.compact`)."""
    return Path(run) / "ticket.compact.pt"


def latency(run: PathLike) -> Path:
    """The ticket's measured CPU latency, its compacted copy's and the dense network's (:mod:`bench.nn.latency`)."""
    return Path(run) / "latency.json"


def meta(run: PathLike) -> Path:
    """What the search recorded about the ticket (sparsity, compute, stages)."""
    return Path(run) / "meta.json"


def status(run: PathLike) -> Path:
    """Whether the search finished or failed."""
    return Path(run) / "status.json"


def log(run: PathLike) -> Path:
    """The run's log."""
    return Path(run) / "log.txt"


def error(run: PathLike) -> Path:
    """The traceback of a failed sweep job."""
    return Path(run) / "error.txt"


def ticket_lock(run: PathLike) -> Path:
    """The lock the process searching a run's ticket holds (a second run of the same spec waits on it)."""
    return Path(run) / ".ticket.lock"


def eval_root(run: PathLike) -> Path:
    """The evaluation cache of a run or zoo evaluation (one folder per model digest)."""
    return Path(run) / "eval"


def transfer(run: PathLike, suffix: str, protocol: str = "") -> Path:
    """A randomised ticket's transfer matrix: ``csv``, ``md`` or its key ``json``; ``protocol`` '' (early stop)
    or ``full-steps``."""
    return Path(run) / (f"transfer-{protocol}.{suffix}" if protocol else f"transfer.{suffix}")


def checkpoint(train_dir: PathLike) -> Path:
    """A training stage's per-epoch resume checkpoint."""
    return Path(train_dir) / "last.pt"


def stage_dir(out_stages: PathLike, name: str, key_digest: str) -> Path:
    """The folder of shared stage ``name`` with key digest ``key_digest``."""
    return Path(out_stages) / f"{name}-{key_digest}"


def stage_model(stage: PathLike) -> Path:
    """A shared stage's model."""
    return Path(stage) / "model.pt"


def stage_meta(stage: PathLike) -> Path:
    """A shared stage's compute record."""
    return Path(stage) / "stage.json"


def stage_key(stage: PathLike) -> Path:
    """The key a shared stage was built for."""
    return Path(stage) / "key.json"


def stage_record(stage: PathLike) -> Path:
    """A shared stage's training record (best epoch, validation accuracies)."""
    return Path(stage) / "record.json"


def stage_lock(stage: PathLike) -> Path:
    """The lock one builder of a shared stage holds."""
    return Path(stage) / ".lock"


def ticket_finished(run: PathLike) -> bool:
    """Whether a run folder holds a finished ticket (spec, meta and the ticket, full or compact)."""
    return spec(run).exists() and (ticket(run).exists() or compact_ticket(run).exists()) and meta(run).exists()
