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
