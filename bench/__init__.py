"""robust-tickets: one harness to find, attack and compare robust sparse networks."""
from bench.harness import load_ticket, run_spec
from bench.spec import RunSpec

__all__ = ["RunSpec", "load_ticket", "run_spec"]
