"""Random RST Switch (R2S, Fu et al., NeurIPS 2021): a random choice among RSTs of one random network.

K Robust Scratch Tickets of different sparsities are searched over the SAME
frozen random network (same seed, architecture and weight init, so every
parameter is shared); each has its own scores, hence its own mask and its own
BatchNorm running statistics. At inference the switch picks one candidate at
random: for each forward call (``draw_per=call``, the default: every
example of the batch goes through the same candidate) or independently for
each example (``draw_per=example``). The draws come from the switch's own
``torch.Generator``; :meth:`RandomSwitch.reseed` makes an evaluation
reproducible.

Candidates reuse finished ``rst`` runs of the same base spec (same output
folder, seed, data and training settings, method ``rst`` at the candidate's
sparsity, default RST hyperparameters with this run's ``weight_init`` and ``linear_bias``);
missing ones are searched with RST's own code as shared stages
(``<out>/stages/rst-ticket-<hash>``), so other R2S runs reuse them too.

The spec's ``sparsity`` is the *reference candidate*: it is always one of the
candidates (added to ``--candidates`` when absent), the ticket's own masked
layers hold that candidate (so ``measured_sparsity`` and every tool reading
the masked layers see a genuine RST at the target), and rows report it as
target/measured sparsity. The mean sparsity over the candidates (the expected
fraction of zeros of the network used by one forward pass) and each
candidate's measured sparsity are in ``meta.json``.

The switch is evaluated by :mod:`bench.evaluation.randomized` (non-adaptive and adaptive
attacks, accuracies as mean and std over inference draws, the candidates'
transfer matrix); see docs/r2s.md.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
import torch.nn as nn
from torch.func import functional_call

from bench.core.config import spec_field
from bench.methods import Method, Network, RunContext, get_method, register
from bench.methods.runstore import RunStore
from bench.methods.stages import WEIGHT_INITS
from bench.methods.ticket import empty_model
from bench.nn.masking import frozen_fingerprint, layer_sparsity, measured_sparsity
from bench.spec import RunSpec

# Keep ratios 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.4, 0.6 as sparsities: the span of the RST paper's transfer
# matrix between RSTs (keep 0.03 to 0.6, ../shared/REFERENCE.md 1.1). The paper does not list its R2S candidates,
# and no R2S code was released (its test_trans.py evaluates whatever checkpoints lie in a folder): our choice.
DEFAULT_CANDIDATES = (0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.6, 0.4)
# What one random draw serves: a forward call (every example of the batch) or one example.
DRAWS_PER = ("call", "example")


@dataclass(frozen=True)
class R2SHparams:
    """R2S hyperparameters."""

    candidates: Tuple[float, ...] = field(default=DEFAULT_CANDIDATES, metadata={
        "help": "candidate sparsities, comma-separated (--sparsity is always one of them)"})
    draw_per: str = spec_field("call", "a random candidate per forward call | per example (before 2026-12: "
                               "'granularity')", choices=DRAWS_PER)
    draws: int = field(default=5, metadata={"help": "inference draws averaged for every accuracy (mean and std)"})
    weight_init: str = spec_field("signed-constant", "frozen random weights: signed-constant | kaiming-normal", choices=WEIGHT_INITS)
    linear_bias: bool = field(default=False, metadata={"help": "linear layers with (frozen random) biases; the "
                                                               "references have none"})

    def __post_init__(self) -> None:
        # CLI/YAML give strings; store floats so equal candidate lists hash equally.
        try:
            values = tuple(float(c) for c in self.candidates)
        except (TypeError, ValueError):
            raise ValueError(f"r2s candidates must be numbers (sparsities), got {self.candidates!r}") from None
        object.__setattr__(self, "candidates", values)


def candidate_sparsities(spec: RunSpec) -> Tuple[float, ...]:
    """The switch's candidates, sparsest first: the hparam list plus the spec's sparsity."""
    return tuple(sorted(set(spec.hparams.candidates) | {float(spec.sparsity)}, reverse=True))


class CandidateState(nn.Module):
    """One candidate's own buffers (masks as bool, BatchNorm statistics), in the base network's order."""

    def __init__(self, base: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        buffers = dict(base.named_buffers())
        for i, name in enumerate(names):
            value = buffers[name]
            self.register_buffer(f"b{i}", value.bool() if name.endswith(".mask") else value.clone())

    def values(self) -> List[torch.Tensor]:
        """The buffers in order."""
        return [getattr(self, f"b{i}") for i in range(len(list(self.buffers())))]


class RandomSwitch(nn.Module):
    """K candidate networks sharing every parameter; each forward call uses a randomly drawn one.

    ``base`` holds the shared parameters and the reference candidate's
    buffers; candidate ``k`` runs the base with its own buffers swapped in
    (``torch.func.functional_call``, nothing is mutated), so a switch with one
    candidate is exactly that RST.
    """

    def __init__(self, base: nn.Module, sparsities: Sequence[float], draw_per: str = "call", seed: int = 0) -> None:
        super().__init__()
        if draw_per not in DRAWS_PER:
            raise ValueError(f"unknown r2s draw_per {draw_per!r}; choices: {', '.join(DRAWS_PER)}")
        if not sparsities:
            raise ValueError("a random switch needs at least one candidate")
        self.base = base
        self.sparsities = tuple(float(s) for s in sparsities)
        self.draw_per = draw_per
        # Every buffer except the input normalisation is per candidate.
        self.buffer_names = [n for n, _ in base.named_buffers() if not n.startswith("normalize.")]
        self.states = nn.ModuleList(CandidateState(base, self.buffer_names) for _ in self.sparsities)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def n_candidates(self) -> int:
        """Number of candidates K."""
        return len(self.sparsities)

    def reseed(self, seed: int) -> None:
        """Restart the switch's random draws from ``seed``."""
        self.generator.manual_seed(seed)

    @torch.no_grad()
    def set_candidate(self, k: int, model: nn.Module) -> None:
        """Copy candidate ``k``'s buffers from ``model`` (an RST of the same network)."""
        buffers = dict(model.named_buffers())
        for name, dst in zip(self.buffer_names, self.state_of(k).values()):
            dst.copy_(buffers[name].bool() if dst.dtype == torch.bool else buffers[name])

    def _overrides(self, k: int) -> Dict[str, torch.Tensor]:
        """Candidate ``k``'s buffers, masks as the weights' dtype."""
        dtype = next(self.base.parameters()).dtype
        return {name: (v.to(dtype) if v.dtype == torch.bool else v) for name, v in zip(self.buffer_names, self.state_of(k).values())}

    def state_of(self, k: int) -> CandidateState:
        """Candidate ``k``'s own buffers."""
        state = self.states[k]
        if not isinstance(state, CandidateState):
            raise TypeError(f"candidate {k} holds {type(state).__name__}, not CandidateState")
        return state

    def forward_candidate(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Logits of candidate ``k`` (deterministic)."""
        logits: torch.Tensor = functional_call(self.base, self._overrides(k), (x,))
        return logits

    def draw(self, n: int) -> torch.Tensor:
        """Candidate indices for a call on ``n`` examples (one shared index, or one per example)."""
        size = 1 if self.draw_per == "call" else n
        return torch.randint(self.n_candidates, (size,), generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ks = self.draw(len(x))
        if len(ks) == 1:
            return self.forward_candidate(x, int(ks[0]))
        # Per example: run each drawn candidate on its examples and put the logits back in place.
        out: Optional[torch.Tensor] = None
        for k in torch.unique(ks).tolist():
            idx = (ks == k).nonzero().squeeze(1).to(x.device)
            logits = self.forward_candidate(x[idx], k)
            if out is None:
                out = logits.new_zeros(len(x), logits.shape[1])
            out = out.index_copy(0, idx, logits)
        if out is None:
            raise ValueError("a random switch needs at least one example per call")
        return out

    def candidate(self, k: int) -> nn.Module:
        """A deterministic view of candidate ``k``."""
        if not 0 <= k < self.n_candidates:
            raise ValueError(f"candidate {k} out of range: the switch has {self.n_candidates} candidates")
        return CandidateView(self, k)

    def ensemble(self) -> nn.Module:
        """A deterministic view returning the mean logits of all candidates."""
        return EnsembleView(self)


class CandidateView(nn.Module):
    """Candidate ``k`` of a switch as a deterministic model."""

    def __init__(self, switch: RandomSwitch, k: int) -> None:
        super().__init__()
        self.switch = switch
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.switch.forward_candidate(x, self.k)


class EnsembleView(nn.Module):
    """The mean logits of every candidate of a switch."""

    def __init__(self, switch: RandomSwitch) -> None:
        super().__init__()
        self.switch = switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.switch.forward_candidate(x, k) for k in range(self.switch.n_candidates)]).mean(0)


def rst_spec(spec: RunSpec, sparsity: float) -> RunSpec:
    """The ``rst`` spec of one candidate: this spec with method rst at ``sparsity``."""
    return dataclasses.replace(spec, method="rst", sparsity=sparsity, hparams={"weight_init": spec.hparams.weight_init,
                                                                                    "linear_bias": spec.hparams.linear_bias})


def find_candidate(ctx: RunContext, sparsity: float) -> Tuple[nn.Module, str]:
    """A candidate RST: a finished ``rst`` run of the same base spec, else a shared stage searched now."""
    spec = rst_spec(ctx.spec, sparsity)
    # A finished rst run of exactly this spec in the same output folder.
    runs = RunStore.of_stages(ctx.stages_dir)
    if runs.has_ticket(spec):
        meta = runs.meta(spec.run_id)
        ctx.info.setdefault("stage_compute", []).append({"seconds": meta["train_seconds"], "passes": meta["train_passes"]})
        return runs.ticket(spec.run_id, ctx.device), f"run:{spec.run_id}"
    # Otherwise RST's own search, as a stage other R2S runs can reuse.
    rst = get_method("rst")

    def build(stage_dir: Path) -> nn.Module:
        sub = RunContext(spec, ctx.data, ctx.device, stage_dir, ctx.stages_dir, ctx.compute)
        return rst.find_ticket(sub)

    key = {"stage": "rst-ticket", **spec.canonical()}
    model = ctx.shared_stage("rst-ticket", key, build, lambda: empty_model(spec, ctx.device))
    return model.eval(), f"stage:{ctx.stage_path('rst-ticket', key).name}"


def check_shared(models: Sequence[nn.Module], sparsities: Sequence[float]) -> None:
    """Every candidate must have the same parameters (the same frozen random network)."""
    ref = dict(models[0].named_parameters())
    for model, s in zip(models[1:], sparsities[1:]):
        for name, p in model.named_parameters():
            if not name.endswith("scores") and not torch.equal(p, ref[name]):
                raise ValueError(f"r2s candidate at sparsity {s} has different {name} from the first candidate: "
                                 "candidates must share one frozen random network")


@register("r2s", "Random RST Switch: a random choice among RSTs of several sparsities over one frozen random network")
class R2S(Method):
    """Random RST Switch."""

    Hparams = R2SHparams
    bn_affine = False
    # RST's code keeps its best epoch (picked on the test set; here on the validation split).
    reference_select = "best"
    randomized = True
    # The hyperparameter that says what one draw serves was "granularity" until the spec's --granularity came.
    renamed_hparams = {"granularity": "draw_per"}

    def network(self, spec: RunSpec) -> Network:
        """RST's network: non-affine BatchNorm; linear biases only with ``--linear-bias true``."""
        return Network(bn_affine=False, linear_bias=bool(spec.hparams.linear_bias))

    def validate(self, spec: RunSpec) -> None:
        """Candidates in [0, 1) without repeats and at least one draw (draw_per and weight init are checked choices)."""
        hp = spec.hparams
        if not hp.candidates:
            raise ValueError("r2s needs at least one candidate sparsity (--candidates)")
        bad = [c for c in hp.candidates if not 0.0 <= c < 1.0]
        if bad:
            raise ValueError(f"r2s candidates must be sparsities in [0, 1), got {bad}")
        if len(set(hp.candidates)) != len(hp.candidates):
            raise ValueError(f"r2s candidates must not repeat, got {list(hp.candidates)}")
        if hp.draws < 1:
            raise ValueError(f"r2s draws must be >= 1, got {hp.draws}")

    def build_empty(self, spec: RunSpec, device: Union[str, torch.device] = "cpu") -> nn.Module:
        """An untrained switch with the spec's candidates (what ``ticket.pt`` loads into)."""
        base = super().build_empty(spec, device)
        return RandomSwitch(base, candidate_sparsities(spec), spec.hparams.draw_per, spec.seed).to(device)

    def find_ticket(self, ctx: RunContext) -> nn.Module:
        """Collect (reuse or search) every candidate RST and put them behind one switch."""
        sparsities = candidate_sparsities(ctx.spec)
        found = [find_candidate(ctx, s) for s in sparsities]
        models = [m for m, _ in found]
        check_shared(models, sparsities)
        # The base network holds the reference candidate (the spec's sparsity); the switch every candidate.
        ref = sparsities.index(float(ctx.spec.sparsity))
        switch = cast(RandomSwitch, self.build_empty(ctx.spec, ctx.device))
        switch.base.load_state_dict(models[ref].state_dict())
        for k, model in enumerate(models):
            switch.set_candidate(k, model)
        measured = [measured_sparsity(m) for m in models]
        ctx.info.update({
            "candidates": list(sparsities), "candidate_measured_sparsity": measured,
            "mean_sparsity": statistics.fmean(measured), "reference_candidate": ref,
            "candidate_sources": [src for _, src in found],
            "candidate_layer_sparsity": [layer_sparsity(m) for m in models],
            "draw_per": ctx.hp.draw_per, "frozen_fingerprint": frozen_fingerprint(switch),
        })
        return switch

    def inference_draws(self, spec: RunSpec) -> int:
        """Every accuracy of a switch is the mean over ``draws`` inference draws."""
        return int(spec.hparams.draws)
