"""The ``labcache`` command, run for real: ``python -m labcache ...`` in a
subprocess against Local, Redis and S3 storages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached
from labcache.lock_record import LockRecord, this_host, this_user
from labcache.names import lock_name_for

from .support import cli_workers
from .support.cli import one_error_line, run, run_json, target
from .support.procs import CTX, PATIENCE, collect, dead_pid, reaping


def _square(x: int, label: str = "sq") -> int:
    return x * x


def _cube(x: int) -> int:
    return x * x * x


@pytest.fixture
def filled(storage: LocalStorage) -> tuple[Any, Any, str]:
    square, cube = cached(storage=storage)(_square), cached(storage=storage)(_cube)
    for x in (1, 2, 3):
        square(x)
    cube(2)
    return square, cube, f"file://{storage.root}"


# -- listing --------------------------------------------------------------------------------


def test_ls_lists_functions_in_an_aligned_table(filled: Any) -> None:
    square, cube, url = filled
    out = run("ls", url=url).stdout.splitlines()
    assert out[0] == f"storage: {url}"
    assert out[1].split() == ["FUNCTION", "ENTRIES", "SIZE", "LAST", "USED", "NEWEST", "BY"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert set(rows) == {square.context, cube.context}
    assert rows[square.context].split()[1] == "3"
    assert f"{this_user()}@{this_host()}" in rows[square.context]
    assert len({line.index("ENTRIES") if "ENTRIES" in line else None for line in out[1:2]}) == 1


def test_ls_json_and_an_empty_storage(filled: Any, tmp_path: Path) -> None:
    square, cube, url = filled
    data = run_json("ls", url=url)
    counts = {row["function"]: row["entries"] for row in data["functions"]}
    assert counts == {square.context: 3, cube.context: 1}
    assert all(row["size"] > 0 and row["last_used"] > 0 for row in data["functions"])
    (tmp_path / "empty").mkdir()  # an existing folder with nothing cached yet
    empty = run("ls", url=f"file://{tmp_path / 'empty'}")
    assert "no entries" in empty.stdout


def test_ls_function_by_qualified_name_or_context(filled: Any) -> None:
    square, _, url = filled
    for name in ("_square", square.context):
        data = run_json("ls", name, url=url)
        assert data["function"] == square.context and data["total"] == 3
        assert {row["key"] for row in data["entries"]} == {square.key(x) for x in (1, 2, 3)}
    text = run("ls", "_square", url=url).stdout
    assert square.key(2)[:12] in text and "label='sq', x=2" in text
    assert "... and 1 more" in run("ls", "_square", "--limit", "2", url=url).stdout


def test_nothing_matched_exits_1(filled: Any) -> None:
    _, _, url = filled
    for args in (("ls", "no_such_function"), ("info", "ffffffff"), ("rm", "ffffffff"),
                 ("clear", "nope"), ("unlock", "nope")):
        assert "no " in one_error_line(run(*args, url=url, check=1))


def test_info_by_unambiguous_prefix(filled: Any) -> None:
    square, _, url = filled
    key = square.key(3)
    data = run_json("info", key[:8], url=url)
    assert data["key"] == key and data["function"] == square.context
    assert data["arguments"] == {"x": "3", "label": "'sq'"} and data["lock"] is None
    text = run("info", key, url=url).stdout
    assert f"key              {key}" in text and "x=3" in text
    one_error_line(run("info", "", url=url, check=2))  # matches every entry: ambiguous


# -- removing ---------------------------------------------------------------------------------


def test_rm_and_clear(filled: Any) -> None:
    square, cube, url = filled
    done = run_json("rm", square.key(1)[:10], square.key(2), url=url)
    assert {row["key"] for row in done["removed"]} == {square.key(1), square.key(2)}
    assert not square.is_cached(1) and square.is_cached(3)
    cleared = run_json("clear", "_square", url=url)
    assert cleared["removed"] == 1 and not square.is_cached(3)
    assert cube.is_cached(2)


def test_rm_on_every_backend(any_storage: Any) -> None:
    store, url = target(any_storage)
    square = cached(storage=store)(_square)
    square(5), square(6)
    assert run("rm", square.key(5), url=url).stdout.startswith(f"removed {square.key(5)}")
    assert not square.is_cached(5) and square.is_cached(6)
    assert [r["entries"] for r in run_json("ls", url=url)["functions"]] == [1]


# -- locks ------------------------------------------------------------------------------------


def test_unlock_refuses_a_live_holder_and_force_breaks_it(any_storage: Any) -> None:
    store, url = target(any_storage)
    name = lock_name_for("tests.cli.f", "ab12cd34ef56")
    with reaping() as start:
        queue, release = CTX.Queue(), CTX.Event()
        worker = start(CTX.Process(target=cli_workers.hold_lock,
                                   args=(store, name, queue, release)))
        assert collect(queue, 1)[0][0] == "held"
        locks = run_json("locks", url=url)["locks"]
        assert [(lock["name"], lock["state"]) for lock in locks] == [(name, "fresh")]
        assert f"pid {worker.pid}" in run("locks", url=url).stdout
        refused = one_error_line(run("unlock", "ab12cd", url=url, check=2))
        assert f"{this_user()}@{this_host()} pid {worker.pid}" in refused
        assert "--force" in refused
        assert store.lock_info(name) is not None
        done = run_json("unlock", name, "--force", url=url)
        assert done == {"unlocked": name, "holder": f"{this_user()}@{this_host()} pid "
                        f"{worker.pid}", "stale": False}
        assert store.lock_info(name) is None
        release.set()


def test_unlock_breaks_a_stale_lock_without_force(storage: LocalStorage) -> None:
    name = lock_name_for("tests.cli.f", "0123456789ab")
    record = LockRecord(this_user(), this_host(), LockRecord.new(60, None).boot, dead_pid(),
                        "t0k", time.time(), 60.0, None)
    assert storage._lock_create(name, record.to_bytes()) is not None
    url = f"file://{storage.root}"
    assert "stale" in run("locks", url=url).stdout
    assert "(stale)" in run("unlock", name, url=url).stdout
    assert storage.lock_info(name) is None
    assert run("locks", url=url).stdout.strip().endswith("no locks")


# -- gc ---------------------------------------------------------------------------------------


def test_gc_evicts_least_recently_used_and_skips_a_locked_key(any_storage: Any) -> None:
    from .support.used_order import CONTEXT, PAYLOAD, make_used_order

    store, url = target(any_storage)
    make_used_order(store, ("a", "b", "c", "d"), reread="d")
    assert store.try_acquire_lock(lock_name_for(CONTEXT, "a"), ttl=600)
    try:
        done = run_json("gc", "--max-size", f"{2 * len(PAYLOAD)}B", url=url)
    finally:
        store.release_lock(lock_name_for(CONTEXT, "a"))
    assert [row["key"] for row in done["skipped"]] == ["a"]  # locked: being computed
    assert [row["key"] for row in done["removed"]] == ["b", "c"]
    assert store.list_stored_files(CONTEXT) == ["a", "d"]


def test_gc_dry_run_older_than_and_text(storage: LocalStorage) -> None:
    from .support.used_order import CONTEXT, make_used_order

    make_used_order(storage, ("a", "b"), reread="b")
    url = f"file://{storage.root}"
    text = run("gc", "--older-than", "30m", "--dry-run", url=url).stdout
    assert "would remove 1 entry (1.0 kB); 1.0 kB left" in text
    assert storage.list_stored_files(CONTEXT) == ["a", "b"]
    assert "removed 1 entry" in run("gc", "--older-than", "30m", url=url).stdout
    assert storage.list_stored_files(CONTEXT) == ["b"]


# -- errors, stats, entry points ---------------------------------------------------------------


@pytest.mark.parametrize("args", [("bogus",), ("gc", "train"), ("gc", "--max-size", "lots"),
                                  ("ls", "--storage", "/no/scheme"), ("unlock",),
                                  ("gc", "--older-than", "soon"), ("gc", "--orphan-age", "x")])
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    one_error_line(run(*args, check=2))


@pytest.mark.parametrize("url", ["redis://:hunter2@127.0.0.1:1/0",
                                 "redis://alice:hunter2@127.0.0.1:1/0",
                                 "redis://127.0.0.1:1/0?password=hunter2"])
def test_storage_errors_exit_2_and_never_print_a_password(url: str) -> None:
    done = run("ls", url=url, check=2)
    line = one_error_line(done)
    assert "hunter2" not in done.stderr + done.stdout and "***" in line


def test_stats_counts_the_whole_storage(filled: Any) -> None:
    _, _, url = filled
    data = run_json("stats", url=url)
    assert (data["functions"], data["entries"], data["locks"]) == (2, 4, 0)
    assert data["size"] > 0 and data["storage"] == url
    assert "entries              4" in run("stats", url=url).stdout


def test_default_storage_comes_from_the_environment(filled: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, url = filled
    monkeypatch.setenv("LABCACHE_STORAGE", url)
    assert run_json("stats")["entries"] == 4


def test_demo_runs_against_the_given_storage(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'demo'}"
    done = run_json("demo", url=url)
    assert done["done"] is True
    functions = run_json("ls", url=url)["functions"]
    assert [(f["function"], f["entries"]) for f in functions] == [("labcache.demo.simulate", 2)]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "labcache"
    if not script.exists():
        pytest.skip("not installed as a package here (pip install -e .)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "unlock" in done.stdout


# -- docs/cli.md: every command on the page runs --------------------------------------------


def test_every_command_in_the_cli_page_runs(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from .support.markdown import DOCS, fenced_blocks

    blocks = list(fenced_blocks(DOCS / "cli.md"))
    script = next(b for b in blocks if b.runnable)
    commands = [line.split() for b in blocks if b.info.split()[:1] == ["bash"]
                and "Illustration" not in b.info
                for line in b.code.splitlines() if line.startswith("labcache ")]
    assert {c[1] for c in commands} >= {"ls", "info", "rm", "clear", "locks", "unlock", "gc",
                                        "stats", "demo"}
    root = tmp_path / "cache"
    monkeypatch.setenv("LABCACHE_DIR", str(root))
    (tmp_path / "example.py").write_text(script.code, encoding="utf-8")
    subprocess.run([sys.executable, str(tmp_path / "example.py")], check=True, timeout=PATIENCE,
                   cwd=tmp_path)
    entries = run_json("ls", "train")["entries"]
    key = next(e["key"] for e in entries if "n_trees=30" in e["arguments"])
    store, lock = LocalStorage(root), lock_name_for("__main__.train", key)
    for command in commands:
        args = [key[:6] if word == "3f9a2c" else word for word in command[1:]]
        if args[0] == "unlock" and "--force" in args:  # a live holder: this test process
            assert store.try_acquire_lock(lock, ttl=600)
        elif args[0] == "unlock":  # a holder that died
            record = LockRecord(this_user(), this_host(), LockRecord.new(60, None).boot,
                                dead_pid(), "t0k", time.time(), 60.0, None)
            assert store._lock_create(lock, record.to_bytes()) is not None
        run(*args)
    assert store.lock_info(lock) is None
    assert "__main__.train" not in [f["function"] for f in run_json("ls")["functions"]]


def test_progress_bar_draws_on_a_terminal_only() -> None:
    import io

    from labcache._cli_format import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, piped = Terminal(), io.StringIO()
    for stream in (screen, piped):
        bar = ProgressBar("gc", stream=stream)
        bar(1, 4)
        bar(4, 4)
        bar.close()
    assert "gc [#######" in screen.getvalue() and "4/4 entries" in screen.getvalue()
    assert screen.getvalue().endswith("\r\033[K")  # erased before the command's output
    assert piped.getvalue() == ""


# -- empty names ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("rm", ""), ("rm", "KEY", " "), ("unlock", ""),
                                  ("unlock", "", "--force"), ("info", ""), ("ls", ""),
                                  ("clear", ""), ("gc", "", "--max-size", "0")])
def test_empty_names_are_refused_and_nothing_is_touched(
        storage: LocalStorage, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    """An empty KEY, LOCK or FUNCTION would match every entry or lock as a
    prefix: it is a usage error (exit 2), and nothing is removed or broken."""
    from labcache.cli import main

    square = cached(storage=storage)(_square)
    square(1)
    lock = lock_name_for(square.context, square.key(1))
    assert storage.try_acquire_lock(lock, ttl=1)  # a lock `unlock ""` could break
    args = tuple(square.key(1) if a == "KEY" else a for a in args)
    capsys.readouterr()
    assert main([*args, "--storage", f"file://{storage.root}"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("labcache: error: ") and "is empty" in message, message
    assert storage.list_stored_files(square.context) == [square.key(1)]
    assert storage.lock_info(lock) is not None
    storage.release_lock(lock)


def test_clear_by_a_non_ascii_name_clears_only_that_function(
        storage: LocalStorage, capsys: pytest.CaptureFixture[str]) -> None:
    """`計算` and `処理` once shared one context; each is found by its own name."""
    from labcache.cli import main

    from .support.unicode_names import 処理, 計算

    one, two = cached(storage=storage)(計算), cached(storage=storage)(処理)
    one(1), two(1), two(2)
    url = f"file://{storage.root}"
    for name in ("計算", f"{計算.__module__}.計算", one.context):
        assert main(["ls", name, "--json", "--storage", url]) == 0
        assert json.loads(capsys.readouterr().out)["function"] == one.context
    assert main(["clear", "計算", "--storage", url]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert storage.list_stored_files(one.context) == []
    assert sorted(storage.list_stored_files(two.context)) == sorted([two.key(1), two.key(2)])


def test_cli_manages_a_prefixed_redis_storage(redis_server: Any) -> None:
    """`?prefix=` in the URL picks one team's keys on a shared server."""
    from labcache import RedisStorage

    team, team2 = (RedisStorage(redis_server.url, prefix=p) for p in ("team", "team2"))
    square, cube = cached(storage=team)(_square), cached(storage=team2)(_cube)
    square(1), square(2), cube(1)
    data = run_json("ls", url=f"{redis_server.url}?prefix=team")
    assert {row["function"]: row["entries"] for row in data["functions"]} == {square.context: 2}
    assert "removed 2 entries" in run("clear", "_square",
                                      url=f"{redis_server.url}?prefix=team").stdout
    assert cube.is_cached(1) and not square.is_cached(1)
    data = run_json("ls", url=f"{redis_server.url}?prefix=team2")
    assert {row["function"]: row["entries"] for row in data["functions"]} == {cube.context: 1}
