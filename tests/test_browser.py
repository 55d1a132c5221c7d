"""The monitor widget rendered by JupyterLab in a real (headless) Chromium.

JupyterLab runs on a free loopback port with every Jupyter folder in the
test's ``tmp_path`` and in its own process group; Playwright drives Debian's
``/usr/bin/chromium`` (never a downloaded browser).  The notebook fills a
storage with entries, holds one lock with a heartbeat and displays
``labcache.monitor(storage)``; the test checks what the panel shows and saves
a screenshot.  Recipe: /work/shared/BROWSER-TESTS.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labcache import LocalStorage
from labcache.locks import _pid_alive

from .support.jupyter import isolate_jupyter
from .support.services_redis import free_port, missing_service, require

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
#: Seconds for each wait in the browser (a loaded CI machine starts kernels slowly).
PATIENCE = 45.0

NOTEBOOK_CELLS = [
    """import labcache
from labcache import LocalStorage, cached
from labcache.names import lock_name_for

storage = LocalStorage(STORE)

@cached(storage=storage)
def featurize(n):
    return list(range(n))

@cached(storage=storage)
def train_model(n):
    return sum(range(n))

featurize(3), featurize(4), train_model(10)""",
    # A computation in progress: this kernel holds train_model(11)'s lock, beating.
    """lock = lock_name_for(train_model.context, train_model.key(11))
assert storage.try_acquire_lock(lock, ttl=600, heartbeat_interval=1)""",
    """labcache.monitor(storage)""",
]


def need_browser() -> None:
    if not CHROMIUM.exists():
        missing_service(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_service("playwright is not installed (pip install -e '.[browser]'; "
                        "never `playwright install`: the test uses /usr/bin/chromium)")
    require("jupyterlab", "ipykernel", "ipywidgets", "nbformat", extra="browser")


def write_notebook(path: Path, store: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [new_code_cell(source.replace("STORE", repr(str(store))))
             for source in NOTEBOOK_CELLS]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, path)


def start_lab(env: dict[str, str], root: Path, port: int, token: str,
              log: Path) -> subprocess.Popen[bytes]:
    """JupyterLab serving ``root``, in its own process group, answering /api/status."""
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
        "--port", str(port), "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--notebook-dir", str(root), "--allow-root",
        "--expose-app-in-browser", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with log.open("wb") as output:
        server = subprocess.Popen(command, env=env, cwd=root, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_lab(server)
    pytest.fail(f"JupyterLab did not answer on port {port}:\n{log.read_text()[-3000:]}")


def stop_lab(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it shuts its kernels down), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def test_monitor_renders_in_jupyterlab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_browser()
    from playwright.sync_api import sync_playwright

    env = isolate_jupyter(tmp_path, monkeypatch)
    for name in ("JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        env[name] = str(folder)
    # No "get notified about Jupyter news?" toast over the panel in the screenshot.
    notification = (tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
                    / "notification.jupyterlab-settings")
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    root, store = tmp_path / "lab", tmp_path / "store"
    root.mkdir()
    write_notebook(root / "monitor.ipynb", store)
    port, token = free_port(), secrets.token_hex(16)
    screenshot = tmp_path / "monitor.png"

    server = start_lab(env, root, port, token, tmp_path / "jupyterlab.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "chromium"), executable_path=str(CHROMIUM),
                headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.set_default_timeout(PATIENCE * 1000)
                page.goto(f"http://127.0.0.1:{port}/lab/tree/monitor.ipynb?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell")
                page.wait_for_function("() => window.jupyterapp !== undefined")
                page.evaluate("() => window.jupyterapp.restored")
                page.wait_for_function("""() => {
                    const panel = window.jupyterapp.shell.currentWidget;
                    const kernel = panel && panel.sessionContext
                        && panel.sessionContext.session && panel.sessionContext.session.kernel;
                    return kernel && kernel.status === 'idle';
                }""")
                page.evaluate(
                    "() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

                # Rendered widgets, inside an output area (the source editor also
                # contains the words): the lock table's row says "fresh".
                output = page.locator(".jp-OutputArea-output").filter(
                    has=page.locator(".jupyter-widgets .widget-html"))
                output.locator(".widget-html", has_text="fresh").first.wait_for()
                output.locator(".jupyter-button").first.wait_for()
                text = output.first.inner_text()

                locks = LocalStorage(store).list_locks()
                assert len(locks) == 1 and not locks[0].stale, locks
                assert locks[0].pid != os.getpid()  # held by the notebook's kernel
                assert "labcache monitor" in text, text
                assert re.search(r"__main__\.featurize\s+2\s", text), text  # 2 entries
                assert re.search(r"__main__\.train_model\s+1\s", text), text  # 1 entry
                # The lock's row: function, key, holder (user@host pid N), ..., fresh.
                key, holder = locks[0].name.rsplit(".", 1)[1], re.escape(locks[0].holder)
                row = rf"__main__\.train_model\s+{key}\s+{holder}\s.*\sfresh\s"
                assert re.search(row, text), text

                output.first.scroll_into_view_if_needed()
                page.screenshot(path=str(screenshot))
            finally:
                browser.close()
    finally:
        stop_lab(server)
        # The server shuts its kernels down (they run in their own sessions, out
        # of reach of killpg); the lock's holder is that kernel: make sure it ended.
        for lock in LocalStorage(store).list_locks():
            deadline = time.monotonic() + 10
            while _pid_alive(lock.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if lock.pid != os.getpid() and _pid_alive(lock.pid):
                os.kill(lock.pid, signal.SIGKILL)

    assert screenshot.exists()
    assert screenshot.stat().st_size > 20_000, screenshot.stat().st_size
