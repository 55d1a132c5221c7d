"""Real Jupyter kernels for the notebook and browser tests, isolated per test.

Every Jupyter and IPython folder (kernelspecs, runtime files, config, the
IPython profile) is pointed into the test's ``tmp_path``, and a ``python3``
kernelspec there runs ``sys.executable``: the kernels import the very
labcache and packages this test process does, never another interpreter's.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
#: The MIME type of an ipywidgets view in a cell's outputs.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Where nbclient saves the widget models in an executed notebook.
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: Seconds a kernel may take to start (a loaded CI machine is slow to import).
KERNEL_START = 60.0


def isolate_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point Jupyter into ``tmp_path``; return the environment for kernels.

    The returned environment also sends the kernel's default cache folder
    (``LABCACHE_DIR``) and its temporary files (``TMPDIR``) into ``tmp_path``.
    """
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (labcache tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }))
    folders = {
        "JUPYTER_PATH": data,  # searched first for kernelspecs: ours shadows any other python3
        "JUPYTER_DATA_DIR": data,
        "JUPYTER_RUNTIME_DIR": tmp_path / "jupyter-runtime",
        "JUPYTER_CONFIG_DIR": tmp_path / "jupyter-config",
        "IPYTHONDIR": tmp_path / "ipython",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(folder))
    # jupyter_core: use the platformdirs layout now, without its DeprecationWarning.
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ)
    env.update(
        LABCACHE_DIR=str(tmp_path / "kernel-cache"),
        TMPDIR=str(scratch),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
        # ipykernel's debugger warns on stderr about frozen modules otherwise.
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


def outputs_text(cell: Any) -> str:
    """Everything a notebook cell showed, as text (streams and text/plain)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") == "error":
            parts.append("\n".join(output.get("traceback", [])))
        else:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@dataclass(frozen=True)
class Message:
    """One iopub message of an execution, with when it arrived."""

    type: str
    content: dict[str, Any]
    at: float

    @property
    def text(self) -> str:
        """A stream's text or a display's text/plain ("" for others)."""
        if self.type == "stream":
            return str(self.content.get("text", ""))
        return str(self.content.get("data", {}).get("text/plain", ""))

    @property
    def display_id(self) -> str | None:
        return (self.content.get("transient") or {}).get("display_id")


class Kernel:
    """One real IPython kernel (its own process) and a blocking client to it.

    A kernel is used by one thread at a time (its zmq sockets are not shared
    between threads at the same moment).
    """

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=KERNEL_START)
        except BaseException:
            self.close()
            raise

    def send(self, code: str) -> str:
        """Start executing ``code``; returns the request's id."""
        msg_id: str = self.client.execute(code)
        return msg_id

    def messages(self, msg_id: str, timeout: float = 60.0) -> Iterator[Message]:
        """The outputs of request ``msg_id`` as they arrive, until the kernel is idle."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"kernel still busy after {timeout} s")
            try:
                msg = self.client.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status":
                if content["execution_state"] == "idle":
                    return
                continue
            if kind == "error":
                raise AssertionError("the kernel raised:\n" + "\n".join(content["traceback"]))
            if kind in ("stream", "display_data", "update_display_data", "execute_result"):
                yield Message(kind, content, time.monotonic())

    def run(self, code: str, timeout: float = 60.0) -> list[Message]:
        """Execute ``code`` and return its outputs (AssertionError if it raised)."""
        return list(self.messages(self.send(code), timeout))

    def printed(self, code: str, timeout: float = 60.0) -> str:
        """What ``code`` printed to stdout."""
        return "".join(m.text for m in self.run(code, timeout) if m.type == "stream")

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=True)
