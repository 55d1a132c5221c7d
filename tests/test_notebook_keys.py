"""Functions defined in notebook cells keep their key across cells and kernels.

Each IPython shell below runs in its own process (its own pid and cell
counter), the way two kernels would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("IPython")

SHELL = textwrap.dedent("""
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    for _ in range(int(sys.argv[1])):
        shell.run_cell("pass", store_history=True)  # earlier cells shift the cell number
    cell = '''
    from labcache import cached

    @cached
    def prepare(rows, scale=2):
        return [r * scale for r in range(rows)]

    key = prepare.key(5)
    result = prepare(5)
    '''
    outcome = shell.run_cell(cell, store_history=True)
    outcome.raise_error()
    print(json.dumps({"key": shell.user_ns["key"], "result": shell.user_ns["result"],
                      "file": shell.user_ns["prepare"].__wrapped__.__code__.co_filename}))
""")


def run_shell(skip_cells: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SHELL, str(skip_cells)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_notebook_function_key_ignores_cell_number_and_pid():
    first, second = run_shell(0), run_shell(3)
    assert first["file"] != second["file"]  # IPython really named the cells differently
    assert first["key"] == second["key"]
    assert first["result"] == second["result"] == [0, 2, 4, 6, 8]


# -- real kernels -------------------------------------------------------------------------

HELPERS = '''
SCALE = 10
def clean(x):
    return x + 1
def helper(x):
    return clean(x) * SCALE
'''
CACHED = '''
from labcache import cached
runs = []
@cached
def f(x):
    runs.append(x)
    return helper(x)
'''


def _kernel_env(tmp_path, monkeypatch):
    from .support.jupyter import isolate_jupyter
    from .support.services_redis import require

    require("ipykernel", "jupyter_client")
    return isolate_jupyter(tmp_path, monkeypatch)


def test_fresh_kernel_hits_and_helper_edits_show_in_a_kernel(tmp_path, monkeypatch):
    from .support.jupyter import Kernel

    env = _kernel_env(tmp_path, monkeypatch)
    first = Kernel(env, cwd=tmp_path)
    try:
        first.run(HELPERS)
        first.run(CACHED)
        assert first.printed("print(f(2), f.key(2))").split()[0] == "30"
        key = first.printed("print(f.key(2))").strip()
        # Redefine a helper's helper: the next call recomputes and says why.
        first.run("def clean(x):\n    return x + 2\n")
        shown = " ".join(m.text for m in first.run("print(f(2), len(runs))"))
        assert "40 2" in shown
        assert "labcache: recomputing: helper clean changed" in shown
        assert "helper clean" in first.printed("def clean(x):\n    return x + 3\n"
                                                "print(f.explain(2).changed)")
        # Put the old definition back: the old entry is found, nothing runs.
        first.run("def clean(x):\n    return x + 1\n")
        assert first.printed("print(f(2), len(runs), f.key(2))").split() == ["30", "2", key]
    finally:
        first.close()
    fresh = Kernel(env, cwd=tmp_path)  # a new kernel running the same cells
    try:
        fresh.run(HELPERS)
        fresh.run(CACHED)
        assert fresh.printed("print(f.key(2), f.explain(2).hit, f(2), len(runs))").split() \
            == [key, "True", "30", "0"]
    finally:
        fresh.close()
