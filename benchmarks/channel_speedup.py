"""CPU speedup of compacted tickets over the dense network of the same architecture, weight vs channel tickets.

Latency does not depend on the weights' values, so the tickets are masks drawn at random at each sparsity (a
channel ticket's layers lose whole channels, a weight ticket's single weights; ``bench.nn.masking.apply_masks``),
over networks with non-trivial BatchNorm statistics. Every figure comes from :func:`bench.nn.latency.ticket_latency`,
the function the harness runs once per ticket: medians at batch 1 and 128, the dense twin and the compacted copy
timed in the same process, one after the other. Run with nothing else on the machine::

    OMP_NUM_THREADS=1 python benchmarks/channel_speedup.py [--threads 1] [--archs convnet,vgg16]
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from bench.data import dataset_info
from bench.nn.cost import model_cost
from bench.nn.latency import ticket_latency
from bench.nn.masking import apply_masks
from bench.nn.models import ModelConfig, build_model

# Each architecture on its usual dataset's input shape.
DATASETS = {"convnet": "fashion-mnist", "mlp": "fashion-mnist", "vgg16": "cifar10", "resnet18": "cifar10"}


@torch.no_grad()
def ticket(arch: str, width: float, sparsity: float, granularity: str) -> Tuple[nn.Module, Tuple[int, int, int]]:
    """A random ticket of ``arch`` with BatchNorm statistics that are not the defaults, and its input shape."""
    info = dataset_info(DATASETS[arch])
    torch.manual_seed(0)
    model = build_model(arch, ModelConfig(info.in_channels, info.num_classes, info.image_size, info.mean, info.std, width))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.3)  # type: ignore[union-attr]
            module.running_var.uniform_(0.5, 1.5)  # type: ignore[union-attr]
    gen = torch.Generator().manual_seed(1)
    apply_masks(model, lambda _n, layer: torch.rand(layer.weight.shape, generator=gen), sparsity, granularity=granularity)
    return model.eval(), (info.in_channels, info.image_size, info.image_size)


def main(argv: Optional[List[str]] = None) -> None:
    """Print one Markdown line per (architecture, width, granularity, sparsity)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--archs", default="convnet,vgg16")
    parser.add_argument("--widths", default="0.5,1")
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| arch | width | granularity | sparsity | compaction | MACs dense / performed | dense b1 ms | compacted b1 ms "
          "| speedup b1 | dense b128 ms | compacted b128 ms | speedup b128 |")
    print("|" + "---|" * 12)
    for arch in args.archs.split(","):
        for width in (float(w) for w in args.widths.split(",")):
            for granularity in ("weight", "channel"):
                for sparsity in (float(s) for s in args.sparsities.split(",")):
                    model, shape = ticket(arch, width, sparsity, granularity)
                    f = ticket_latency(model, shape)
                    macs = model_cost(model, shape)["macs_dense"] / f["compacted_macs"]
                    print(f"| {arch} | {width:g} | {granularity} | {sparsity:g} | {f['compaction']} | {macs:.2f}x "
                          f"| {f['dense_b1_ms']:.3f} | {f['compacted_b1_ms']:.3f} | {f['speedup_b1']:.2f}x "
                          f"| {f['dense_b128_ms']:.2f} | {f['compacted_b128_ms']:.2f} | {f['speedup_b128']:.2f}x |",
                          flush=True)


if __name__ == "__main__":
    main()
