"""Jupyter front ends: the monitor widget, the live status line and ``%%cache``.

Nothing here is imported by ``import labcache``; IPython and ipywidgets load
only when a notebook feature is used.
"""
