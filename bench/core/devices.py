"""Which torch device a spec's ``device`` field names."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Dict

import torch

# Where Linux describes the CPU (absent elsewhere: the platform's processor string is used instead).
CPUINFO = Path("/proc/cpuinfo")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but no CUDA GPU is available (use --device cpu)")
    return torch.device(name)


def cpu_fields(text: str) -> Dict[str, str]:
    """The first processor's ``key: value`` lines of a /proc/cpuinfo text."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU as rows record it: model name, family and model numbers (virtual machines often hide the name, and
    two CPU generations then differ only there) and the vector instructions torch's kernels use here."""
    # Kernels are picked by instruction set, and float results (hence trained tickets) can differ between them.
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        fields = cpu_fields(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        fields = {}
    if not fields:
        return f"{platform.processor() or platform.machine() or 'unknown CPU'} ({capability})"
    # x86 names the model and its family/model numbers; 64-bit ARM only its implementer and part numbers.
    name = (fields.get("model name") or fields.get("Processor") or fields.get("vendor_id")
            or ("ARM CPU" if "CPU implementer" in fields else "unknown CPU"))
    numbers = " ".join(f"{label} {fields[key]}" for key, label in (
        ("cpu family", "family"), ("model", "model"), ("CPU implementer", "implementer"), ("CPU part", "part"))
        if fields.get(key))
    return f"{name}{', ' + numbers if numbers else ''} ({capability})"


def device_name(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's name, the CPU's (:func:`cpu_name`), or the device type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name() if device.type == "cpu" else device.type
