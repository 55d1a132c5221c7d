"""The notebooks and the notebook features, in real Jupyter kernels.

``notebooks/*.ipynb`` are executed with nbclient and their outputs checked;
the other tests drive kernels (separate processes) through jupyter_client:
two kernels running the same ``%%cache`` cell at the same moment, and the
live status line of a cached call.  Every kernel runs ``sys.executable``
with its Jupyter folders, default cache folder and temp files in the test's
``tmp_path`` (see ``tests/support/jupyter.py``).
"""

from __future__ import annotations

import getpass
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage

from .support.jupyter import (
    NOTEBOOKS,
    WIDGET_STATE,
    WIDGET_VIEW,
    Kernel,
    Message,
    isolate_jupyter,
    outputs_text,
)
from .support.services_redis import require
from .support.waits import wait_until

#: How entries and locks name their maker on this machine (LABCACHE_HOSTNAME is unset).
WHO = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment for this test's kernels (Jupyter isolated in tmp_path)."""
    require("ipykernel", "jupyter_client", "nbclient", "nbformat", "ipywidgets")
    return isolate_jupyter(tmp_path, monkeypatch)


@pytest.fixture
def kernels(kernel_env: dict[str, str], tmp_path: Path) -> Any:
    """``start()`` a kernel; every kernel started is shut down after the test."""
    started: list[Kernel] = []

    def start() -> Kernel:
        kernel = Kernel(kernel_env, cwd=tmp_path)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        kernel.close()


def execute_notebook(name: str, env: dict[str, str], cwd: Path) -> Any:
    """Run every cell of ``notebooks/<name>`` in a fresh kernel; return the notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)  # raises CellExecutionError if a cell fails
    return notebook


def cell_with(notebook: Any, snippet: str, nth: int = 0) -> Any:
    """The ``nth`` code cell whose source contains ``snippet``."""
    found = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    assert len(found) > nth, f"no code cell #{nth} containing {snippet!r}"
    return found[nth]


def monitor_texts(notebook: Any, cell: Any) -> str:
    """The cell shows one ipywidgets view, saved with the notebook: return the
    text of the HTML widgets inside it (the panel's tables and headings)."""
    views = [o for o in cell.outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1, f"expected one widget view, got outputs {cell.outputs}"
    state = notebook.metadata["widgets"][WIDGET_STATE]["state"]
    texts, todo = [], [views[0]["data"][WIDGET_VIEW]["model_id"]]
    while todo:
        model = state[todo.pop(0)]  # KeyError: the view's model was not saved
        if model["model_name"] == "HTMLModel":
            texts.append(model["state"]["value"])
        todo += [child.removeprefix("IPY_MODEL_") for child in
                 model["state"].get("children", [])]
    return "\n".join(texts)


def status_line(messages: list[Message]) -> list[Message]:
    """The live status line of a run: its first ``labcache:`` display and every
    update of that display (same display_id), in order."""
    shown = [m for m in messages if m.type in ("display_data", "update_display_data")
             and m.text.startswith("labcache: ")]
    assert shown and shown[0].type == "display_data" and shown[0].display_id, \
        [m.text for m in messages]
    return [m for m in shown if m.display_id == shown[0].display_id]


# -- the notebooks -----------------------------------------------------------------------


def test_quickstart_notebook(kernel_env: dict[str, str], tmp_path: Path) -> None:
    notebook = execute_notebook("quickstart.ipynb", kernel_env, tmp_path)

    # The tour's storage is a fresh temporary folder: under this test's TMPDIR.
    storage_cell = outputs_text(cell_with(notebook, "storage = LocalStorage("))
    assert f"LocalStorage('{tmp_path / 'tmp'}/labcache-quickstart-" in storage_cell

    first = outputs_text(cell_with(notebook, "first call took"))
    second = outputs_text(cell_with(notebook, "second call took"))
    assert "slow_square(12) = 144" in first and "slow_square(12) = 144" in second
    assert "labcache: computed in" in first
    assert "labcache: loaded from cache in" in second and "computed in" not in second

    helpers = outputs_text(cell_with(notebook, "slow_square.key(12))"))
    assert re.search(r"key of slow_square\(12\): [0-9a-f]{32}\n", helpers)
    assert "same key for x=12?       True" in helpers
    assert "is slow_square(12) cached? True" in helpers
    assert "is slow_square(13) cached? False" in helpers
    invalidated = outputs_text(cell_with(notebook, "slow_square.invalidate(12)"))
    assert "removed an entry: True" in invalidated
    assert "is slow_square(12) cached? False" in invalidated
    refreshed = outputs_text(cell_with(notebook, "slow_square.refresh(12)"))
    assert "labcache: computed in" in refreshed and "refreshed: 144" in refreshed
    assert "is slow_square(12) cached? True" in refreshed

    panel = monitor_texts(notebook, cell_with(notebook, "labcache.monitor(storage)"))
    assert "slow_square" in panel

    # %%cache: the first run computes; the second restores and replays its output.
    computed = outputs_text(cell_with(notebook, "%%cache total finished_at", 0))
    replayed = outputs_text(cell_with(notebook, "%%cache total finished_at", 1))
    assert "labcache: computed in" in computed
    assert "labcache: loaded from cache in" in replayed
    # Only the cell's own output is stored and replayed, never stale status lines.
    assert "labcache: computing" not in computed + replayed
    printed = re.search(r"summed 1,000,000 numbers, finished at (\d\d:\d\d:\d\d)", computed)
    assert printed, computed
    # The same finishing time: replayed, not run again 2 s later.
    assert printed.group(0) in replayed
    restored = outputs_text(cell_with(notebook, 'print("restored:"'))
    assert f"restored: 499999500000 computed at {printed.group(1)}" in restored


@pytest.mark.parametrize("backend", ["folder", "redis"])
def test_collaboration_notebook(backend: str, kernel_env: dict[str, str], tmp_path: Path,
                                request: pytest.FixtureRequest) -> None:
    if backend == "redis":
        url = request.getfixturevalue("redis_server").url
        kernel_env = dict(kernel_env, LABCACHE_STORAGE=url)
    notebook = execute_notebook("collaboration.ipynb", kernel_env, tmp_path)

    opened = outputs_text(cell_with(notebook, "storage = open_storage(url)"))
    if backend == "redis":
        assert f"team storage: {url}" in outputs_text(cell_with(notebook, "team storage:"))
        assert opened.startswith(f"RedisStorage('{url}'")
    else:  # no LABCACHE_STORAGE: a new temporary folder (under this test's TMPDIR)
        folder = re.search(r"LocalStorage\('([^']+)'\)", opened)
        assert folder and folder.group(1).startswith(f"{tmp_path / 'tmp'}/labcache-team-")

    locks = outputs_text(cell_with(notebook, "storage.list_locks():"))
    assert re.search(rf"held by {re.escape(WHO)} pid \d+, for [\d.]+ s, fresh: "
                     r"__main__\.daily_report\.[0-9a-f]{32}", locks), locks
    waited = outputs_text(cell_with(notebook, "report = daily_report("))
    assert "labcache: loaded from cache in" in waited
    assert "the body ran 1 time(s)" in waited
    made = outputs_text(cell_with(notebook, "read_entry_header("))
    assert re.search(rf"computed by:  {re.escape(WHO)} pid \d+\n", made), made
    assert re.search(r"created at:   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", made)
    assert re.search(r"compute time: 2\.\d s\n", made)
    assert "arguments:    {'day': \"'2024-06-03'\"}" in made
    after = [c for c in notebook.cells if c.source == "storage.list_locks()"]
    assert len(after) == 1 and outputs_text(after[0]) == "[]"  # released once computed

    panel = monitor_texts(notebook, cell_with(notebook, "labcache.monitor(storage)"))
    assert "daily_report" in panel


# -- %%cache in two kernels at once ------------------------------------------------------


CONTESTED_CELL = """%%cache answer
import os, time
with open(LOG_PATH, "a") as log:
    log.write(f"{os.getpid()}\\n")
deadline = time.monotonic() + 60
while not os.path.exists(GO_PATH):  # the test says go once the other kernel waits
    assert time.monotonic() < deadline, "the test never said go"
    time.sleep(0.05)
answer = f"computed by pid {os.getpid()}"
print("computed:", answer)
"""


def test_two_kernels_run_one_cache_cell_once(kernels: Any, tmp_path: Path) -> None:
    shared, log = tmp_path / "shared", tmp_path / "computations.log"
    go = tmp_path / "go"
    cell = CONTESTED_CELL.replace("%%cache answer", f"%%cache answer --storage {shared.as_uri()}")
    cell = cell.replace("LOG_PATH", repr(str(log))).replace("GO_PATH", repr(str(go)))
    pair = [kernels(), kernels()]
    pids = []
    for kernel in pair:
        ran = kernel.printed("import os, sys\n%load_ext labcache\n"
                             "print(sys.executable, os.getpid())")
        executable, pid = ran.split()
        assert executable == sys.executable  # the kernels run this interpreter
        pids.append(int(pid))

    # Both requests go out back to back (microseconds apart); the kernels are
    # separate processes, so from here on they race for real.  (One thread:
    # jupyter_client's blocking calls leave an unclosed event loop per thread.)
    requests = [kernel.send(cell) for kernel in pair]
    first = wait_until(lambda: log.exists() and log.read_text().split(),
                       "one kernel to start computing the cell")
    winner = pids.index(int(first[0]))
    loser = 1 - winner
    # The winner's cell runs until ``go``: say it once both kernels show their
    # line (iopub messages queue up, so reading one kernel first loses nothing).
    streams = [kernel.messages(msg_id, timeout=60)
               for kernel, msg_id in zip(pair, requests, strict=True)]
    results: list[list[Message]] = [[], []]
    for index, shown in ((loser, "labcache: waiting for"), (winner, "labcache: computing")):
        for message in streams[index]:
            results[index].append(message)
            if message.text.startswith(shown):
                break
    go.touch()
    for index, stream in enumerate(streams):
        results[index].extend(stream)

    computed_by = log.read_text().split()
    assert len(computed_by) == 1, f"the cell ran {len(computed_by)} times: {computed_by}"
    answers = [kernel.printed("print(answer)").strip() for kernel in pair]
    assert answers == [f"computed by pid {pids[winner]}"] * 2

    won = [m.text for m in status_line(results[winner])]
    assert won[0].startswith("labcache: computing") and won[-1].startswith("labcache: computed in")
    lost = status_line(results[loser])
    assert lost[0].type == "display_data"
    assert lost[0].text.startswith(f"labcache: waiting for {WHO} pid {pids[winner]}, ")
    assert lost[-1].type == "update_display_data"
    assert lost[-1].display_id == lost[0].display_id
    assert lost[-1].text.startswith("labcache: loaded from cache in")
    replayed = "".join(m.text for m in results[loser] if m.type == "stream")
    assert f"computed: computed by pid {pids[winner]}" in replayed


# -- the live status line ------------------------------------------------------------------


SLOW_FUNCTION = """
import os, time
from labcache import LocalStorage, cached
storage = LocalStorage(STORE)

@cached(storage=storage)
def slow_double(x):
    time.sleep(2.5)
    return 2 * x
"""


def test_status_line_counts_while_computing(kernels: Any, tmp_path: Path) -> None:
    kernel = kernels()
    kernel.run(SLOW_FUNCTION.replace("STORE", repr(str(tmp_path / "store"))))
    messages = kernel.run("print(slow_double(21))")

    shown = status_line(messages)
    assert [m for m in messages if m.text.startswith("labcache: ")] == shown  # one line only
    first, last = shown[0], shown[-1]
    # The line appears after a second of computing (quick misses draw nothing).
    assert first.type == "display_data"
    assert re.fullmatch(r"labcache: computing, [12]\.\d s", first.text), first.text
    assert first.display_id
    assert all(m.type == "update_display_data" and m.display_id == first.display_id
               for m in shown[1:])
    # While the body sleeps the line counts up, live (not all at the end).
    ticks = [m for m in shown[:-1] if re.fullmatch(r"labcache: computing, [12]\.\d s", m.text)]
    assert ticks, [m.text for m in shown]
    assert last.at - ticks[0].at > 0.5
    assert re.fullmatch(r"labcache: computed in 2\.\d s, stored for next time", last.text)
    assert "42" in "".join(m.text for m in messages if m.type == "stream")
    assert LocalStorage(tmp_path / "store").list_locks() == []


def test_status_line_names_the_holder_while_waiting(kernels: Any, tmp_path: Path) -> None:
    waiter, holder = kernels(), kernels()
    store = repr(str(tmp_path / "store"))
    for kernel in (waiter, holder):
        kernel.run(SLOW_FUNCTION.replace("STORE", store))
    # The holder kernel holds the very lock slow_double(21) needs, beating twice a second.
    holder_pid = int(holder.printed(
        "from labcache.names import lock_name_for\n"
        "lock = lock_name_for(slow_double.context, slow_double.key(21))\n"
        "assert storage.try_acquire_lock(lock, ttl=60, heartbeat_interval=0.5)\n"
        "print(os.getpid())"))

    messages, released_at = [], None
    for message in waiter.messages(waiter.send("print(slow_double(21))"), timeout=60):
        messages.append(message)
        waiting = [m for m in messages if m.text.startswith("labcache: waiting for")]
        if released_at is None and len(waiting) >= 2:  # shown, then updated at least once
            holder.run("storage.release_lock(lock)")
            released_at = time.monotonic()
    assert released_at is not None, [m.text for m in messages]

    shown = status_line(messages)
    assert shown[0].type == "display_data"
    assert re.fullmatch(rf"labcache: waiting for {re.escape(WHO)} pid {holder_pid}, "
                        r"[\d.]+ s, last beat [\d.]+ s ago", shown[0].text), shown[0].text
    assert all(m.display_id == shown[0].display_id for m in shown)
    # Released: the waiter takes the lock over and computes on the same line.
    texts = [m.text for m in shown]
    assert any(t.startswith("labcache: computing") for t in texts), texts
    assert texts[-1].startswith("labcache: computed in"), texts
    assert "42" in "".join(m.text for m in messages if m.type == "stream")


# -- %%cache and the status line --------------------------------------------------------------


def test_cache_cell_replays_only_what_the_cell_showed(kernels: Any, tmp_path: Path) -> None:
    """%%cache captures the cell's output; its own status line must stay live
    while the cell runs and must not be stored and replayed with that output."""
    kernel = kernels()
    kernel.run("%load_ext labcache")
    cell = (f"%%cache value --storage {(tmp_path / 'store').as_uri()}\n"
            "import time\ntime.sleep(2.5)\nvalue = 7\nprint('the cell says hi')")
    first, hit = kernel.run(cell), kernel.run(cell)

    live = [m.text for m in status_line(first)]
    assert any(re.fullmatch(r"labcache: computing, [12]\.\d s", t) for t in live), live
    for run in (first, hit):
        shown = [m.text for m in run if m.text.startswith("labcache: ")]
        assert shown == [m.text for m in status_line(run)], shown  # nothing but the live line
    assert [m.text for m in hit if m.type == "stream"] == ["the cell says hi\n"]
    assert [m.text for m in status_line(hit)][-1].startswith("labcache: loaded from cache in")
