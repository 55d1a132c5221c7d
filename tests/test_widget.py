"""The monitor widget and the listings under it (labcache.jupyter.widget, labcache.listing)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

import labcache
from labcache import LocalStorage, cached, listing
from labcache.base import EntryStat
from labcache.cli import main
from labcache.formatting import parse_size, size_text
from labcache.jupyter.widget import Monitor, monitor
from labcache.lock_record import this_host, this_user
from labcache.names import lock_name_for
from labcache.report import stats
from labcache.transfer import FAILURES_CONTEXT
from tests.support.workers import FOREIGN_HOST, plant_stale_lock

FRESH_KEY = "f" * 32
STALE_KEY = "0" * 32


class Filled:
    """A storage with two functions' entries, a fresh lock and a stale one."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

        @cached(storage=storage)
        def square(x: int) -> int:
            return x * x

        @cached(storage=storage)
        def shout(word: str) -> str:
            if word == "fail":
                raise ValueError("no")
            return word.upper()

        self.square, self.shout = square, shout
        for x in range(3):
            square(x)
        shout("<b>hi</b>")
        with pytest.raises(ValueError):
            shout("fail")  # leaves a record in the hidden failures context
        self.fresh = lock_name_for(square.context, FRESH_KEY)
        self.stale = lock_name_for(shout.context, STALE_KEY)
        assert storage.try_acquire_lock(self.fresh, heartbeat_interval=30)
        plant_stale_lock(storage, self.stale, "expired_ttl", 0)


@pytest.fixture
def filled(storage: LocalStorage) -> Iterator[Filled]:
    world = Filled(storage)
    yield world
    storage.release_lock(world.fresh)


@pytest.fixture
def panels() -> Iterator[list[Monitor]]:
    made: list[Monitor] = []
    yield made
    for panel in made:
        panel.close()


def open_panel(panels: list[Monitor], storage: Any, **options: Any) -> Monitor:
    panel = monitor(storage, **{"refresh_every": None, **options})
    panels.append(panel)
    return panel


def row_count(html: str, kind: str) -> int:
    return html.count(f'class="labcache-{kind}"')


def test_lazy_export():
    assert labcache.monitor is monitor
    assert "monitor" in labcache.__all__


def test_panel_shows_functions_sizes_holders_and_lock_states(filled, panels):
    panel = open_panel(panels, filled.storage)
    page = panel.html()
    assert filled.storage.get_root_path() in page
    for fn, count in ((filled.square, 3), (filled.shout, 1)):
        stats_ = filled.storage.describe_entries(fn.context)
        total = size_text(sum(s.size for s in stats_ if s.size is not None))
        assert f"<td>{fn.context}</td><td>{count}</td><td>{total}</td>" in page
    assert FAILURES_CONTEXT not in page
    me = f"{this_user()}@{this_host()} pid {os.getpid()}"
    assert me in page  # the holder of the fresh lock, and who made the entries
    assert f"{this_user()}@{FOREIGN_HOST} pid {os.getpid()}" in page
    assert row_count(page, "lock-fresh") == 1 and row_count(page, "lock-stale") == 1
    assert f"<td>{FRESH_KEY}</td>" in page and f"<td>{STALE_KEY}</td>" in page
    assert ">fresh<" in page and ">stale<" in page


def test_the_panel_and_the_command_write_a_size_alike(storage, panels, capsys):
    @cached(storage=storage)
    def blob(n: int) -> bytes:
        return b"x" * n

    blob(1_500_000)
    [stat] = storage.describe_entries(blob.context)
    shown = size_text(stat.size)
    assert shown == "1.5 MB"  # decimal units, as max_size="1.5MB" reads them back
    assert parse_size(shown.replace(" ", "")) == 1_500_000
    assert f"<td>{shown}</td>" in open_panel(panels, storage).html()
    assert main(["ls", "--storage", storage.root.as_uri()]) == 0
    assert f"  {shown}  " in capsys.readouterr().out


def test_user_strings_are_escaped(filled, panels):
    panel = open_panel(panels, filled.storage)
    panel.function_choice.value = filled.shout.context
    assert "&lt;b&gt;hi&lt;/b&gt;" in panel.entries.value
    assert "<b>hi" not in panel.entries.value


def test_pages_of_fifty(storage, panels):
    @cached(storage=storage)
    def many(i: int) -> int:
        return i

    for i in range(120):
        many(i)
    sizes = [len(listing.entries_page(storage, many.context, page)[0]) for page in range(3)]
    assert sizes == [50, 50, 20]
    first, total = listing.entries_page(storage, many.context, 0)
    assert total == 120
    created = [row.created or 0.0 for row in first]
    assert created == sorted(created, reverse=True)  # newest first

    panel = open_panel(panels, storage)
    panel.function_choice.value = many.context
    seen = [row_count(panel.entries.value, "entry")]
    assert panel.prev_button.disabled
    for _ in range(2):
        panel.next_button.click()
        seen.append(row_count(panel.entries.value, "entry"))
    assert seen == [50, 50, 20]
    assert panel.next_button.disabled and "page 3 of 3 (120 entries)" in panel.page_label.value
    panel.prev_button.click()
    assert row_count(panel.entries.value, "entry") == 50


def test_invalidate_selected_entry(filled, panels):
    panel = open_panel(panels, filled.storage)
    context = filled.square.context
    panel.function_choice.value = context
    name = panel.entry_choice.value
    assert filled.storage.check_if_exists(name, context)
    panel.invalidate_button.click()
    assert not filled.storage.check_if_exists(name, context)
    assert "invalidated" in panel.status.value
    assert row_count(panel.entries.value, "entry") == 2


def test_clear_function_needs_confirm(filled, panels):
    panel = open_panel(panels, filled.storage)
    context = filled.square.context
    panel.function_choice.value = context
    panel.clear_button.click()
    assert "delete all 3 entries" in panel.status.value
    assert panel.confirm_button.layout.display != "none"
    assert len(filled.storage.list_stored_files(context)) == 3
    panel.cancel_button.click()
    panel.confirm_button.click()  # nothing asked any more
    assert len(filled.storage.list_stored_files(context)) == 3
    assert "nothing to confirm" in panel.status.value

    panel.clear_button.click()
    panel.confirm_button.click()
    assert filled.storage.list_stored_files(context) == []
    assert "deleted 3 entries" in panel.status.value
    assert panel.confirm_button.layout.display == "none"
    assert filled.storage.list_stored_files(filled.shout.context)  # the other one stays


def test_break_stale_lock_after_confirm(filled, panels):
    panel = open_panel(panels, filled.storage)
    panel.lock_choice.value = filled.stale
    panel.break_button.click()
    assert "Confirm" in panel.status.value and "stale" in panel.status.value
    assert filled.storage.lock_info(filled.stale) is not None
    panel.confirm_button.click()
    assert filled.storage.lock_info(filled.stale) is None
    assert "broke lock" in panel.status.value
    assert row_count(panel.locks.value, "lock-stale") == 0


def test_fresh_lock_needs_force(filled, panels):
    panel = open_panel(panels, filled.storage)
    panel.lock_choice.value = filled.fresh
    panel.break_button.click()
    status = panel.status.value
    assert "refused" in status and f"{this_user()}@{this_host()} pid {os.getpid()}" in status
    assert panel.confirm_button.layout.display == "none"
    panel.confirm_button.click()
    assert filled.storage.lock_info(filled.fresh) is not None

    panel.force.value = True
    panel.break_button.click()
    assert "FRESH" in panel.status.value
    panel.confirm_button.click()
    assert filled.storage.lock_info(filled.fresh) is None
    assert filled.storage.held_token(filled.fresh) is None  # its heartbeat stopped too


def test_lock_that_changed_hands_is_not_broken(filled, panels):
    panel = open_panel(panels, filled.storage)
    panel.lock_choice.value = filled.stale
    panel.break_button.click()
    assert filled.storage.try_acquire_lock(filled.stale)  # someone took it over meanwhile
    try:
        panel.confirm_button.click()
        assert "changed since you asked" in panel.status.value
        assert filled.storage.lock_info(filled.stale) is not None
    finally:
        filled.storage.release_lock(filled.stale)


def test_kernel_stats_show_hits(filled, panels):
    before = stats.hits
    filled.square(1)
    filled.square(2)
    assert stats.hits >= before + 2
    panel = open_panel(panels, filled.storage)
    assert f"hits {stats.hits} · misses {stats.misses} · waits {stats.waits}" in \
        panel.kernel_stats.value


def test_errors_become_messages(filled, panels, monkeypatch):
    panel = open_panel(panels, filled.storage)
    panel.function_choice.value = filled.square.context

    def refuse(*args: object) -> None:
        raise PermissionError("read-only share")

    monkeypatch.setattr(filled.storage, "delete_file", refuse)
    panel.invalidate_button.click()
    assert "PermissionError: read-only share" in panel.status.value
    monkeypatch.setattr(filled.storage, "describe_entries", refuse)
    panel.refresh_button.click()
    assert "refresh failed" in panel.header.value and "read-only share" in panel.status.value


def test_refresh_thread_updates_and_stops_on_close(storage, panels):
    @cached(storage=storage)
    def later(x: int) -> int:
        return x

    panel = open_panel(panels, storage, refresh_every=0.05)
    assert panel._thread is not None and panel._thread.is_alive()
    assert later.context not in panel.functions.value
    later(1)
    deadline = time.monotonic() + 10
    while later.context not in panel.functions.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert later.context in panel.functions.value
    panel.close()
    panel._thread.join(timeout=5)
    assert not panel._thread.is_alive()


def test_storage_from_url_and_default(tmp_path, panels):
    panel = open_panel(panels, (tmp_path / "team").as_uri())
    assert panel.storage is LocalStorage(tmp_path / "team")
    assert open_panel(panels, None).storage is labcache.default_storage()


def test_storage_without_entry_times_samples_a_few_headers(storage, monkeypatch):
    @cached(storage=storage)
    def many(i: int) -> int:
        return i

    for i in range(12):
        many(i)
    timeless = [EntryStat(s.name, s.size, None) for s in storage.describe_entries(many.context)]
    monkeypatch.setattr(storage, "describe_entries", lambda context: list(timeless))
    reads: list[str] = []
    real = storage.read_entry_header

    def counting(name: str, context: str) -> dict[str, Any]:
        reads.append(name)
        return real(name, context)

    monkeypatch.setattr(storage, "read_entry_header", counting)
    [summary] = listing.summarize(storage)
    assert summary.entries == 12 and summary.newest is not None
    assert len(reads) == listing.SAMPLE_WITHOUT_TIMES and "sampled" in summary.note
    reads.clear()
    rows, total = listing.entries_page(storage, many.context, 0, per_page=5)
    assert total == 12 and len(rows) == len(reads) == 5
    assert [r.name for r in rows] == sorted(r.name for r in rows)


def test_lock_names_split_into_function_and_key(storage):
    context = "m." + "x" * 200
    name = lock_name_for(context, "ab12")
    assert storage.try_acquire_lock(name, ttl=60)
    try:
        [row] = listing.lock_rows(storage, [context])
        assert (row.context, row.key, row.state) == (context, "ab12", "fresh")
        assert 0 <= row.held_for < 60 and 0 <= row.beat_age < 60
        [cut] = listing.lock_rows(storage)
        assert cut.context == context[:140]
    finally:
        storage.release_lock(name)


def test_seed_style_storage(tmp_path, panels, monkeypatch):
    from tests.support.memory import MemoryLockingStorage

    seed = MemoryLockingStorage(str(tmp_path))

    @cached(storage=seed)
    def seeded(x: int) -> int:
        return x + 1

    seeded(1)
    seeded(2)
    assert listing.summarize(seed) == []  # no list_contexts, and not found in any module
    monkeypatch.setattr(sys.modules[__name__], "seeded", seeded, raising=False)
    [summary] = listing.summarize(seed)
    assert (summary.context, summary.entries, summary.total_size) == (seeded.context, 2, None)
    assert summary.newest is not None and summary.newest.size  # from the header
    panel = open_panel(panels, seed)
    assert "cannot list its locks" in panel.html() and panel.break_button.disabled
    panel.function_choice.value = seeded.context
    assert row_count(panel.entries.value, "entry") == 2


def test_listings_on_every_backend(any_storage, panels):
    @cached(storage=any_storage)
    def cube(x: int) -> int:
        return x**3

    for x in range(7):
        cube(x)
    [summary] = [s for s in listing.summarize(any_storage) if s.context == cube.context]
    assert summary.entries == 7 and summary.total_size and summary.newest is not None
    assert summary.newest.who == f"{this_user()}@{this_host()}"
    rows, total = listing.entries_page(any_storage, cube.context, 0, per_page=5)
    assert total == 7 and len(rows) == 5 and all(r.problem is None for r in rows)
    name = lock_name_for(cube.context, FRESH_KEY)
    assert any_storage.try_acquire_lock(name, heartbeat_interval=30)
    try:
        [lock] = listing.lock_rows(any_storage, [cube.context])
        assert (lock.context, lock.key, lock.state) == (cube.context, FRESH_KEY, "fresh")
        page = open_panel(panels, any_storage).html()
        assert cube.context in page and FRESH_KEY in page
    finally:
        any_storage.release_lock(name)


def test_bad_url_is_a_value_error():
    import gc

    with pytest.raises(ValueError, match="unknown storage scheme"):
        monitor("nope://x")
    gc.collect()  # the half-built panel is closed without complaint


def test_kernel_stats_say_why_the_last_recompute_happened(filled, panels, monkeypatch):
    monkeypatch.setattr(stats, "last_recompute", "__main__.f: helper clean changed")
    panel = open_panel(panels, filled.storage)
    assert "last recomputed __main__.f: helper clean changed" in panel.kernel_stats.value
