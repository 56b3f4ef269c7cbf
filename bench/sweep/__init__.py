"""Sweeps: a YAML grid expanded into specs (:mod:`bench.sweep.grid`) and run by an executor
(:mod:`bench.sweep.executors`)."""
