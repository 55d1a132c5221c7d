"""Helpers for the tests, not tests themselves: services, worker processes, kernels.

Worker functions live in modules here (not in test files) so that spawned
processes, dask workers and kernels import them by name, e.g.
``tests.support.workers``; those processes find ``tests`` because the repository
root is on their ``sys.path`` (spawn copies the parent's, and the kernel and
script helpers put it on ``PYTHONPATH``).
"""
