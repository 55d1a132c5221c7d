"""%%cache in an IPython shell (real kernels are in tests/test_notebooks.py)."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("IPython")

from IPython.core.interactiveshell import InteractiveShell

from labcache.jupyter.cells import analyze


@pytest.fixture
def shell(tmp_path, monkeypatch):
    # InteractiveShell swaps in its own __main__ (and reset() strips its
    # __spec__), which breaks later spawn-based tests in this worker.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    shell.run_cell("%load_ext labcache")
    counter = tmp_path / "runs"
    counter.write_text("0")
    # A helper defined in an earlier cell: the cell reads it, keyed by its source.
    shell.run_cell(f"""
def bump():
    from pathlib import Path
    path = Path({str(counter)!r})
    n = int(path.read_text()) + 1
    path.write_text(str(n))
    return n
""").raise_error()
    shell.counter = counter
    yield shell
    shell.reset(new_session=True)


def run(shell, source):
    result = shell.run_cell(source)
    return result


def runs(shell) -> int:
    return int(shell.counter.read_text())


CELL = """%%cache total label
bump()
print("summing", size)
total = sum(range(size))
label = f"n={size}"
"""


def test_second_run_restores_without_executing(shell, capsys):
    shell.user_ns["size"] = 10
    run(shell, CELL).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (45, 1)
    assert "summing 10" in capsys.readouterr().out
    del shell.user_ns["total"], shell.user_ns["label"]
    run(shell, CELL).raise_error()
    assert (shell.user_ns["total"], shell.user_ns["label"], runs(shell)) == (45, "n=10", 1)
    assert "summing 10" in capsys.readouterr().out  # the captured output is replayed


def test_changing_an_input_recomputes(shell):
    shell.user_ns["size"] = 10
    run(shell, CELL).raise_error()
    shell.user_ns["size"] = 20
    run(shell, CELL).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (190, 2)
    shell.user_ns["size"] = 10
    run(shell, CELL).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (45, 2)


def test_editing_the_cell_recomputes(shell):
    shell.user_ns["size"] = 3
    run(shell, CELL).raise_error()
    run(shell, CELL.replace("sum(range(size))", "sum(range(size)) * 2")).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (6, 2)


def test_a_cell_gets_the_options_and_defaults_of_cached(shell, tmp_path):
    from IPython.core.magic_arguments import parse_argstring

    from labcache.jupyter.magic import CacheMagics, CellPlan
    from labcache.options import CacheOptions

    url = (tmp_path / "cells").as_uri()
    plan = CellPlan.prepare(shell, CELL.split("\n", 1)[1],
                            parse_argstring(CacheMagics.cache, f"total --storage {url} "
                                                               "--expires 60"))
    assert plan.call.options == CacheOptions(storage=url, expires_after=60)


def test_storage_option(shell, tmp_path):
    url = (tmp_path / "cells").as_uri()
    shell.user_ns["size"] = 4
    run(shell, CELL.replace("%%cache total label", f"%%cache total label --storage {url}"))
    assert (tmp_path / "cells" / "labcache.cells").is_dir()


@pytest.mark.parametrize(("cell", "message"), [
    ("%%cache missing\nx = 1", "never assigns 'missing'"),
    ("%%cache --ttl soon x\nx = 1", "invalid float value"),
    ("%%cache --ttl 0 x\nx = 1", "ttl must be a positive number of seconds"),
    ("%%cache --expires -5 x\nx = 1", "expires_after must be a positive number"),
    ("%%cache 1x\nx = 1", "not variable names"),
    ("%%cache x --storage nowhere\nx = 1", "has no scheme"),
    ("%%cache x\nx = (", "does not parse"),
])
def test_usage_errors_are_clear_and_run_nothing(shell, cell, message):
    result = run(shell, cell)
    assert message in str(result.error_in_exec)
    assert "x" not in shell.user_ns


def test_unpicklable_variable_is_named(shell):
    result = run(shell, "%%cache numbers stream\nnumbers = [1, 2]\nstream = (i for i in numbers)")
    error = result.error_in_exec
    assert type(error).__name__ == "UnpicklableResultError"
    assert "'stream' (generator)" in str(error)
    assert shell.user_ns["numbers"] == [1, 2]  # the cell ran; nothing was stored


def test_unhashable_input_is_named(shell):
    with open(shell.counter) as handle:
        shell.user_ns["handle"] = handle
        result = run(shell, "%%cache n\nn = len(handle.read())")
    assert "'handle'" in str(result.error_in_exec)


def test_reads_and_assigns():
    names = analyze("import numpy as np\nx = x + 1\ny = np.sqrt(x) * scale\n"
                    "def f(a):\n    return a + g\n[i * w for i in range(n)]")
    assert names.reads == {"x", "scale", "g", "w", "n"}
    assert names.assigns == {"np", "x", "y", "f"}


def test_underscore_inputs_count_ipython_history_does_not(shell):
    shell.user_ns["_size"] = 3
    shell.run_cell("0", store_history=True)  # sets IPython's _
    run(shell, "%%cache total\nbump()\ntotal = _size * 2 + len(str(_))").raise_error()
    shell.run_cell("1 + 1", store_history=True)  # changes IPython's _ and _N
    run(shell, "%%cache total\nbump()\ntotal = _size * 2 + len(str(_))").raise_error()
    assert runs(shell) == 1
    shell.user_ns["_size"] = 4
    run(shell, "%%cache total\nbump()\ntotal = _size * 2 + len(str(_))").raise_error()
    assert runs(shell) == 2


def test_globals_read_by_helpers_the_cell_calls_are_inputs(shell):
    run(shell, "RATE = 2\ndef price(x):\n    return x * RATE\n").raise_error()
    cell = "%%cache total\nbump()\ntotal = price(10)"
    run(shell, cell).raise_error()
    run(shell, "RATE = 3").raise_error()
    run(shell, cell).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (30, 2)
    run(shell, "RATE = 2").raise_error()
    run(shell, cell).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (20, 2)  # the first entry is back


def test_a_helpers_helper_edited_in_another_cell_recomputes(shell):
    run(shell, "def inner(x):\n    return x + 1\ndef outer(x):\n    return inner(x)\n")
    cell = "%%cache total\nbump()\ntotal = outer(1)"
    run(shell, cell).raise_error()
    run(shell, "def inner(x):\n    return x + 2\n").raise_error()
    run(shell, cell).raise_error()
    assert (shell.user_ns["total"], runs(shell)) == (3, 2)
