"""Sweep executors: each module here registers an :class:`bench.sweep.Executor` subclass in ``EXECUTORS``.

Adding an executor (e.g. a cluster backend) is one new module in this package:
subclass ``Executor``, implement ``run(jobs)`` (yield one ``JobResult`` per
job, calling ``bench.sweep.run_job`` wherever the job runs), optionally add
flags in ``add_arguments``/``from_args``, and call ``EXECUTORS.add(name, cls)``.
"""
