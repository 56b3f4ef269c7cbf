"""RobustBench's model zoo, loaded: the one module that imports ``robustbench``.

PyPI ``robustbench`` 1.1.1 does ``from autoattack import AutoAttack`` (and
``autoattack.state``) when it is imported, but PyPI has no ``autoattack``:
the PyPI AutoAttack is ``pyautoattack``. :func:`import_robustbench` maps the
``autoattack`` name to ``pyautoattack`` only while robustbench itself is being
imported, then puts ``sys.modules`` back as it was, so nothing else in the
process sees the alias. If the original ``autoattack`` is installed it is used
as is.

Zoo models load from local weights (``model_dir/<dataset>/<threat>/<name>.pt``);
:func:`zoo_state_for` maps one onto an architecture of this project (the dense
network ``--init-from zoo:NAME`` prunes), checked by computing the same logits.
Evaluating zoo models is :mod:`bench.zoo`.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import pickle
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Tuple, Union

import torch
import torch.nn as nn

from bench.nn.models import Normalize

INSTALL_HINT = "pip install -e '.[robustbench]'  (see docs/robustbench.md)"


class RobustBenchMissing(ImportError, ValueError):
    """robustbench (or one of its dependencies) is not installed.

    Also a ``ValueError`` so the ``bench`` CLI reports it in one line.
    """


@contextlib.contextmanager
def _autoattack_alias() -> Iterator[None]:
    """Within the block, ``autoattack`` resolves to ``pyautoattack`` unless the original is installed."""
    try:
        importlib.import_module("autoattack")
        original = True
    except ImportError:
        original = False
    if original:
        yield
        return
    import pyautoattack
    import pyautoattack.state

    # Save whatever the names held (absent or a None blocker) and restore it afterwards.
    names = {"autoattack": pyautoattack, "autoattack.state": pyautoattack.state}
    saved = {name: sys.modules[name] for name in names if name in sys.modules}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


def import_robustbench() -> ModuleType:
    """The ``robustbench`` package, imported with the ``autoattack`` alias; clear error if absent."""
    if sys.modules.get("robustbench") is not None and "robustbench.utils" in sys.modules:
        return sys.modules["robustbench"]
    try:
        # Its import emits dependency warnings (pkg_resources, requests, torch.jit) that are not ours.
        with _autoattack_alias(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("robustbench")
            importlib.import_module("robustbench.utils")
    except ModuleNotFoundError as exc:
        why = " (robustbench 1.1.1 needs setuptools<81)" if exc.name == "pkg_resources" else ""
        raise RobustBenchMissing(
            f"robustbench is not usable: module {exc.name!r} is missing{why}; install the extra with: {INSTALL_HINT}"
        ) from exc
    return module


def _enums() -> Tuple[Any, Any]:
    """RobustBench's BenchmarkDataset and ThreatModel enums."""
    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return BenchmarkDataset, ThreatModel


def _parse(dataset: str, threat: str) -> Tuple[Any, Any]:
    """Validated (dataset, threat) enum members, with the choices in the error."""
    benchmark_dataset, threat_model = _enums()
    try:
        ds = benchmark_dataset(dataset)
    except ValueError:
        raise ValueError(f"unknown RobustBench dataset {dataset!r}; choices: {', '.join(d.value for d in benchmark_dataset)}") from None
    try:
        tm = threat_model(threat)
    except ValueError:
        raise ValueError(f"unknown RobustBench threat model {threat!r}; choices: {', '.join(t.value for t in threat_model)}") from None
    return ds, tm


def zoo_entries(dataset: str = "cifar10", threat: str = "Linf") -> Dict[str, Dict[str, Any]]:
    """RobustBench's model-zoo entries (name -> {'model', 'gdrive_id'}) for one leaderboard."""
    ds, tm = _parse(dataset, threat)
    from robustbench.model_zoo import model_dicts

    if tm not in model_dicts[ds]:
        raise ValueError(f"RobustBench has no {threat} models for {dataset}; choices: {', '.join(t.value for t in model_dicts[ds])}")
    return dict(model_dicts[ds][tm])


def zoo_models(dataset: str = "cifar10", threat: str = "Linf") -> List[str]:
    """Names in RobustBench's model zoo for one dataset and threat model, in its order."""
    return list(zoo_entries(dataset, threat))


def checkpoint_paths(name: str, model_dir: Union[str, Path], dataset: str = "cifar10", threat: str = "Linf") -> List[Path]:
    """Where ``robustbench.utils.load_model`` reads the weights of ``name`` (empty: fetched through timm).

    The layout is ``model_dir/<dataset>/<threat>/<name>.pt``; ensembles use
    ``<name>.pt_m<i>.pt``, one file per member.
    """
    entries = zoo_entries(dataset, threat)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `bench zoo list`"
        raise ValueError(f"{name!r} is not in RobustBench's {dataset}/{threat} zoo{hint}")
    import timm

    ds, tm = _parse(dataset, threat)
    timm_name = f"{name.lower().replace('-', '_')}_{ds.value.lower()}_{tm.value.lower()}"
    if timm.is_model(timm_name):
        return []
    base = Path(model_dir) / ds.value / tm.value.replace("_3d", "") / f"{name}.pt"
    ids = entries[name]["gdrive_id"]
    if isinstance(ids, list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(ids))]
    return [base]


def load_zoo_model(name: str, model_dir: Union[str, Path], dataset: str = "cifar10", threat: str = "Linf",
                   download: bool = False) -> nn.Module:
    """A RobustBench model in eval mode ([0,1] inputs, logits out), from local weights unless ``download``."""
    paths = checkpoint_paths(name, model_dir, dataset, threat)
    missing = [p for p in paths if not p.is_file()]
    if (missing or not paths) and not download:
        where = missing[0] if missing else "the timm/Hugging Face hub"
        raise ValueError(f"weights of {name} not found (expected {where}); RobustBench downloads them on a connected "
                         f"machine: rerun with --download there, or copy the file into {model_dir}")
    import_robustbench()
    from robustbench.utils import load_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refusing to load {paths[0]}: not a plain tensor checkpoint ({str(exc).splitlines()[0]})") from None
    except RuntimeError as exc:
        if "loading state_dict" not in str(exc):
            raise
        raise ValueError(f"{paths[0] if paths else name} does not match {name}'s architecture: {str(exc).splitlines()[0]}") from None
    return model.eval()


# A zoo network's logits and the mapped network's may differ by float rounding only (relative to the logits' size).
SAME_LOGITS_RTOL = 1e-4
# Tensors of this project's masked layers that a zoo network does not have.
MASKING_TENSORS = ("mask", "scores")


def _own_tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A module's parameters and buffers, not its children's."""
    return {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}


def _layers_called(model: nn.Module, probe: torch.Tensor) -> List[Tuple[str, nn.Module]]:
    """The modules with tensors of their own that ``model``'s forward calls on ``probe``, in registration order
    (a block a network registers but never calls, such as the TRADES WideResNet's ``sub_block1``, is left out)."""
    called = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _args: called.add(id(mod))) for m in model.modules()]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, m) for name, m in model.named_modules() if id(m) in called and _own_tensors(m)]


def zoo_state_for(zoo: nn.Module, target: nn.Module, input_shape: Tuple[int, ...], name: str) -> Dict[str, torch.Tensor]:
    """The state dict of ``target``'s architecture that computes what the zoo network ``zoo`` computes.

    Layers are paired in order (the ones each forward calls), tensor by tensor with equal names and shapes;
    ``target``'s input normalisation (:class:`~bench.nn.models.Normalize`) becomes the identity, as zoo models
    take [0, 1] inputs; masks are all ones. The pairing is then checked: both must give the same logits on random
    inputs of ``input_shape``, else ``ValueError`` (the zoo network is another architecture). ``target`` may be
    on the meta device (only its structure is used).
    """
    probe = torch.rand((4, *input_shape), generator=torch.Generator().manual_seed(0))
    mine = copy.deepcopy(target).to_empty(device="cpu").eval()
    zoo = zoo.eval()
    theirs = _layers_called(zoo, probe)
    ours = [(n, m) for n, m in _layers_called(mine, probe) if not isinstance(m, Normalize)]
    if len(theirs) != len(ours):
        raise ValueError(f"zoo model {name} ({type(zoo).__name__}) has {len(theirs)} layers with tensors in its "
                         f"forward, the spec's architecture {len(ours)}: another architecture")
    # Pair the layers tensor by tensor.
    state: Dict[str, torch.Tensor] = {}
    for (my_name, my_layer), (their_name, their_layer) in zip(ours, theirs):
        want = {k: v for k, v in _own_tensors(my_layer).items() if k not in MASKING_TENSORS}
        have = _own_tensors(their_layer)
        if set(want) != set(have) or any(want[k].shape != have[k].shape for k in want):
            shapes = {k: tuple(v.shape) for k, v in have.items()}
            raise ValueError(f"zoo model {name}: layer {their_name} {shapes} does not fit {my_name} "
                             f"{ {k: tuple(v.shape) for k, v in want.items()} }: another architecture")
        state.update({f"{my_name}.{k}": v.detach().clone() for k, v in have.items()})
    # The identity normalisation, all-ones masks.
    for my_name, module in mine.named_modules():
        tensors = _own_tensors(module)
        if isinstance(module, Normalize):
            state.update({f"{my_name}.{k}": torch.zeros_like(v) if k == "mean" else torch.ones_like(v)
                          for k, v in tensors.items()})
    for key, value in mine.state_dict().items():
        if key.rsplit(".", 1)[-1] in MASKING_TENSORS:
            state[key] = torch.ones_like(value) if key.endswith(".mask") else torch.zeros_like(value)
    # The check: the same logits on fresh inputs.
    mine.load_state_dict(state)
    x = torch.rand((4, *input_shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = zoo(x), mine(x)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape:
        raise ValueError(f"zoo model {name} ({type(zoo).__name__}) does not return logits of shape "
                         f"{tuple(got.shape)} for {tuple(x.shape)} inputs")
    gap = float((expected - got).abs().max())
    if not gap <= SAME_LOGITS_RTOL * (1.0 + float(expected.abs().max())):
        raise ValueError(f"zoo model {name} ({type(zoo).__name__}) does not compute the spec's architecture: with "
                         f"its tensors the logits differ by up to {gap:.3g} (its forward does more than the layers)")
    return state
