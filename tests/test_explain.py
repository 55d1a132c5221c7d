"""explain(): why a call hits or misses, named by the parts of its key."""

from __future__ import annotations

import logging

import pytest

from labcache import cached
from labcache.jupyter.status import CellStatus
from labcache.report import Reporter, stats

from .support.notebook import Notebook

CELLS = """
SCALE = 2
class Model:
    def predict(self, x):
        return x + 1
def inner(x):
    return x * SCALE
def helper(x):
    return inner(x) + Model().predict(x)
@cached(storage=storage)
def f(x):
    return helper(x)
"""


@pytest.fixture
def nb(storage):
    notebook = Notebook(storage)
    notebook.run(CELLS)
    notebook.ns["f"](3)
    return notebook


def explained(nb, call="f.explain(3)"):
    return eval(call, nb.ns)


@pytest.mark.parametrize(("edit", "changed"), [
    ("def helper(x):\n    return inner(x) - Model().predict(x)\n", ["helper helper"]),
    ("def inner(x):\n    return x * SCALE * 2\n", ["helper inner"]),
    ("SCALE = 3", ["global SCALE"]),
    ("class Model:\n    def predict(self, x):\n        return x + 2\n", ["class Model"]),
    ("@cached(storage=storage)\ndef f(x):\n    return helper(x) + 0\n", ["code"]),
])
def test_explain_names_each_kind_of_change(nb, edit, changed):
    assert explained(nb).hit and explained(nb).changed == []
    nb.run(edit)
    explanation = explained(nb)
    assert not explanation.hit
    assert explanation.changed == changed
    assert f"differs in: {changed[0]}" in str(explanation)


def test_explain_names_arguments_and_picks_the_nearest_entry(nb):
    nb.ns["f"](4)
    nb.run("SCALE = 5")
    explanation = explained(nb, "f.explain(5)")
    assert explanation.changed == ["global SCALE", "argument x"]
    assert explanation.compared == 2
    nb.run("SCALE = 2")
    assert explained(nb, "f.explain(5)").changed == ["argument x"]


def test_explain_with_nothing_stored_and_version(storage):
    @cached(storage=storage)
    def g(x):
        return x

    assert str(g.explain(1)).endswith("Nothing is stored for this function yet")
    g(1)
    bumped = cached(storage=storage, version=2)(g.__wrapped__)
    assert bumped.explain(1).changed == ["version"]


def test_explain_on_methods(storage):
    class Box:
        def __init__(self, size):
            self.size = size

        @cached(storage=storage)
        def area(self, scale):
            return self.size * scale

    Box(2).area(3)
    assert Box(2).area.explain(3).hit
    assert Box(2).area.explain(4).changed == ["argument scale"]
    assert Box(5).area.explain(3).changed == ["argument self"]


def test_a_recomputation_says_why(nb, caplog):
    nb.run("SCALE = 7")
    with caplog.at_level(logging.INFO, logger="labcache"):
        nb.ns["f"](3)
    assert "recomputing: global SCALE changed" in caplog.text
    assert stats.last_recompute == "__main__.f: global SCALE changed"  # the monitor shows it
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labcache"):
        nb.ns["f"](4)  # a new argument, no code change: nothing to explain
    assert "recomputing" not in caplog.text


def test_the_status_line_shows_the_reason():
    shown = []
    line = CellStatus(show=lambda line, handle: shown.append(line.text) or "shown")
    reporter = Reporter("f", line)
    reporter.reason = "helper features.scale changed"
    reporter.computing()
    reporter.computed(0.1)
    assert shown[0] == "recomputing: helper features.scale changed"
    assert "(helper features.scale changed)" in shown[-1]
