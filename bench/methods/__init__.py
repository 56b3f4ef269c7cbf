"""Ticket-finding methods: the base class and registry (:mod:`bench.methods.base`), the stages methods share,
compact tickets, ticket files and the run store. Method files themselves live in ``tickets/`` and ``baselines/``
(or a plugin)."""
from bench.methods.base import Method, Network, RunContext, get_method, register

__all__ = ["Method", "Network", "RunContext", "get_method", "register"]
