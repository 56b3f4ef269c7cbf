"""Model registry: every architecture is built from the masked layers.

A model takes inputs in [0,1] and returns logits; the dataset normalisation
is its first module. Architectures get their layers from a
:class:`LayerFactory`, so the same masked-layer mechanism serves every
family and every method (no per-model masking code).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.registry import Registry
from bench.nn.masking import MaskedConv2d, MaskedLinear, prunable_layers


@dataclass(frozen=True)
class ModelConfig:
    """What an architecture builder needs to know about the data and the method."""

    in_channels: int
    num_classes: int
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    width: float = 1.0
    bn_affine: bool = True
    linear_bias: bool = True


class LayerFactory:
    """Hands out masked conv/linear layers and BatchNorm of the chosen kind.

    ``linear_bias=False`` builds every linear layer without a bias, as the
    score-learning references (edge-popup, RST) do: a frozen random network
    then has no frozen random bias anywhere.
    """

    def __init__(self, bn_affine: bool, linear_bias: bool = True) -> None:
        self.bn_affine = bn_affine
        self.linear_bias = linear_bias

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> MaskedConv2d:
        """A masked bias-free convolution."""
        return MaskedConv2d(cin, cout, k, stride=stride, padding=padding, bias=False)

    def linear(self, fin: int, fout: int, bias: bool = True) -> MaskedLinear:
        """A masked linear layer; a bias only if the architecture (``bias``) and the factory both want one."""
        return MaskedLinear(fin, fout, bias=bias and self.linear_bias)

    def bn(self, c: int) -> nn.BatchNorm2d:
        """BatchNorm, non-affine for score-learning methods."""
        return nn.BatchNorm2d(c, affine=self.bn_affine)

    def bn1d(self, c: int) -> nn.BatchNorm1d:
        """1-d BatchNorm, non-affine for score-learning methods."""
        return nn.BatchNorm1d(c, affine=self.bn_affine)


class Normalize(nn.Module):
    """Per-channel normalisation inside the model, so attacks work in [0,1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Normalisation followed by a body that returns logits."""

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


Builder = Callable[[ModelConfig, LayerFactory], nn.Module]
MODELS: Registry[Builder] = Registry("arch", entry_points="robust_tickets.models")


def scaled(channels: int, width: float) -> int:
    """Channel count multiplied by the width factor (at least 1)."""
    return max(1, int(round(channels * width)))


@MODELS.register("convnet", "small 4-layer conv net for 28x28 inputs (CPU-friendly default)")
def convnet(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """conv32-conv64/2-conv128/2 then a 256-unit hidden layer."""
    c1, c2, c3, h = (scaled(c, cfg.width) for c in (32, 64, 128, 256))
    side = math.ceil(math.ceil(cfg.image_size / 2) / 2)
    return nn.Sequential(
        f.conv(cfg.in_channels, c1, 3, padding=1), f.bn(c1), nn.ReLU(),
        f.conv(c1, c2, 3, stride=2, padding=1), f.bn(c2), nn.ReLU(),
        f.conv(c2, c3, 3, stride=2, padding=1), f.bn(c3), nn.ReLU(),
        nn.Flatten(),
        f.linear(c3 * side * side, h), f.bn1d(h), nn.ReLU(),
        f.linear(h, cfg.num_classes),
    )


@MODELS.register("mlp", "300-100 MLP with BatchNorm (a BatchNorm variant of LeNet-300-100; see lenet-300-100)")
def mlp(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """Flatten, 300 and 100 hidden units with BatchNorm, then the classifier."""
    h1, h2 = scaled(300, cfg.width), scaled(100, cfg.width)
    d = cfg.in_channels * cfg.image_size * cfg.image_size
    return nn.Sequential(
        nn.Flatten(),
        f.linear(d, h1), f.bn1d(h1), nn.ReLU(),
        f.linear(h1, h2), f.bn1d(h2), nn.ReLU(),
        f.linear(h2, cfg.num_classes),
    )


@MODELS.register("lenet-300-100", "300-100 ReLU MLP, no BatchNorm, no biases (Cosentino et al.'s net)")
def lenet_300_100(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """Flatten, 300 and 100 ReLU units, then the classifier; no normalisation layers and no biases."""
    h1, h2 = scaled(300, cfg.width), scaled(100, cfg.width)
    d = cfg.in_channels * cfg.image_size * cfg.image_size
    return nn.Sequential(
        nn.Flatten(),
        f.linear(d, h1, bias=False), nn.ReLU(),
        f.linear(h1, h2, bias=False), nn.ReLU(),
        f.linear(h2, cfg.num_classes, bias=False),
    )


class BasicBlock(nn.Module):
    """Pre-activation-free ResNet basic block built from masked layers."""

    def __init__(self, f: LayerFactory, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = f.conv(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = f.bn(cout)
        self.conv2 = f.conv(cout, cout, 3, padding=1)
        self.bn2 = f.bn(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(f.conv(cin, cout, 1, stride=stride), f.bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, four stages)."""

    def __init__(self, cfg: ModelConfig, f: LayerFactory, blocks: Sequence[int]) -> None:
        super().__init__()
        widths = [scaled(c, cfg.width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(f.conv(cfg.in_channels, widths[0], 3, padding=1), f.bn(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(f, cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = f.linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@MODELS.register("resnet18", "ResNet-18 for 32x32 inputs (RST paper's main architecture)")
def resnet18(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """ResNet-18 with width multiplier."""
    return ResNet(cfg, f, (2, 2, 2, 2))


class WideBlock(nn.Module):
    """Pre-activation wide-ResNet block built from masked layers."""

    def __init__(self, f: LayerFactory, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = f.bn(cin)
        self.conv1 = f.conv(cin, cout, 3, stride=stride, padding=1)
        self.bn2 = f.bn(cout)
        self.conv2 = f.conv(cout, cout, 3, padding=1)
        self.shortcut = None if (stride == 1 and cin == cout) else f.conv(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis) for 32x32 inputs."""

    def __init__(self, cfg: ModelConfig, f: LayerFactory, depth: int, k: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [scaled(16, cfg.width)] + [scaled(c * k, cfg.width) for c in (16, 32, 64)]
        self.stem = f.conv(cfg.in_channels, widths[0], 3, padding=1)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(f, cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = f.bn(cin)
        self.fc = f.linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@MODELS.register("wrn-28-4", "WideResNet-28-4 (HYDRA's CIFAR architecture)")
def wrn_28_4(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """WRN-28-4."""
    return WideResNet(cfg, f, 28, 4)


@MODELS.register("wrn-28-10", "WideResNet-28-10")
def wrn_28_10(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """WRN-28-10."""
    return WideResNet(cfg, f, 28, 10)


@MODELS.register("wrn-34-10", "WideResNet-34-10 (the RST code's 'WideResNet32')")
def wrn_34_10(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """WRN-34-10."""
    return WideResNet(cfg, f, 34, 10)


# VGG-16's convolutions (channels; "M" = 2x2 max-pool), configuration D of Simonyan & Zisserman.
VGG16_LAYERS: Tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                            512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 inputs, as HYDRA's and the Adversarial Pruning Benchmark's code builds it.

    3x3 convolutions, each followed by BatchNorm and ReLU; max-pools; a 2x2
    adaptive average pool; a 256-256 ReLU classifier. ``width`` scales every
    convolution's channels and the classifier's hidden units.
    """

    def __init__(self, cfg: ModelConfig, f: LayerFactory, layers: Sequence[Union[int, str]]) -> None:
        super().__init__()
        modules: List[nn.Module] = []
        cin = cfg.in_channels
        for item in layers:
            if item == "M":
                # ceil_mode: identical on 32x32 inputs, and 28x28 ones still reach 1x1 after five pools.
                modules.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            cout = scaled(int(item), cfg.width)
            modules += [f.conv(cin, cout, 3, padding=1), f.bn(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(2)
        hidden = scaled(256, cfg.width)
        self.classifier = nn.Sequential(f.linear(cin * 4, hidden), nn.ReLU(), f.linear(hidden, hidden), nn.ReLU(),
                                        f.linear(hidden, cfg.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def as_sequence(self) -> nn.Sequential:
        """The same computation as one sequence of its layers (shared, not copied), for channel compaction."""
        return nn.Sequential(*self.features, self.pool, nn.Flatten(), *self.classifier)


@MODELS.register("vgg16", "VGG-16 with BatchNorm for 32x32 inputs (HYDRA's and APB's second architecture)")
def vgg16(cfg: ModelConfig, f: LayerFactory) -> nn.Module:
    """VGG-16 (configuration D) with BatchNorm and width multiplier."""
    return VGG(cfg, f, VGG16_LAYERS)


def build_model(arch: str, cfg: ModelConfig) -> Classifier:
    """Build ``arch`` from masked layers, wrapped with input normalisation."""
    body = MODELS.get(arch)(cfg, LayerFactory(cfg.bn_affine, cfg.linear_bias))
    return Classifier(Normalize(cfg.mean, cfg.std), body)


def prunable_policy(model: nn.Module) -> str:
    """Human-readable record of which layers count as prunable."""
    names = [n for n, _ in prunable_layers(model)]
    return f"all conv+linear incl. first and last ({len(names)} layers)"


@torch.no_grad()
def init_signed_kaiming_constant(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise prunable weights to ``sign(w) * gain / sqrt(fan_in)`` (RST's best init)."""
    gain = nn.init.calculate_gain("relu")
    for _name, layer in prunable_layers(model):
        fan_in = layer.weight[0].numel()
        signs = torch.randint(0, 2, layer.weight.shape, generator=generator).float() * 2 - 1
        layer.weight.copy_(signs.to(layer.weight.device) * gain / math.sqrt(fan_in))
