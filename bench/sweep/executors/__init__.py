"""Sweep executors: each module here registers an :class:`bench.sweep.executors.base.Executor` subclass in
``EXECUTORS`` (both in ``base.py``, with the job, its result and ``run_job``).

Adding an executor (e.g. a cluster backend) is one new module in this package: subclass ``Executor``,
implement ``run(jobs)`` (yield one ``JobResult`` per job, calling ``run_job`` wherever the job runs),
optionally declare its settings as a frozen dataclass ``Options`` (one ``bench sweep`` flag per field), and
call ``EXECUTORS.add(name, cls, description)``.
"""
