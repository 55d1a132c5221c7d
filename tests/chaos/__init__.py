"""The chaos test: many processes, random SIGKILLs, every invariant checked.

``test_chaos.py`` runs it at a bounded size on every backend in CI;
``python -m tests.chaos`` runs it at full size, or for minutes (soak).
"""
