"""Deep code identity: a key changes with any code or data the function reaches.

Cells are simulated with ``exec`` into one ``__main__`` namespace, the way a
notebook kernel runs them; files, stale processes and spawn workers use real
processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labcache import LocalStorage, cached
from labcache.keys import function_identity

from .support.notebook import Notebook

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def nb(storage: LocalStorage) -> Notebook:
    return Notebook(storage)


F = """
@cached(storage=storage)
def f(x):
    return helper(x) + 1
"""


def test_editing_a_helper_changes_the_key_and_restoring_it_finds_the_old(nb):
    nb.run("def helper(x):\n    return x * 2\n")
    nb.run(F)
    old = nb.key()
    assert nb.ns["f"](3) == 7
    nb.run("def helper(x):\n    return x * 20\n")
    assert nb.key() != old
    assert nb.ns["f"](3) == 61  # not the old 7
    nb.run("def helper(x):\n    return x * 2\n")
    assert nb.key() == old and nb.ns["f"].is_cached(3)


def test_a_helpers_helper_two_levels_down(nb):
    nb.run("def inner(x):\n    return x - 1\ndef helper(x):\n    return inner(x) * 2\n")
    nb.run(F)
    old = nb.key()
    nb.run("def inner(x):\n    return x - 2\n")
    assert nb.key() != old
    assert nb.ns["f"](3) == 3


def test_module_constants_and_class_edits(nb):
    nb.run("""
        SCALE = 10
        class Model:
            rate = 2
            def predict(self, x):
                return x * self.rate * SCALE
        def helper(x):
            return Model().predict(x)
    """)
    nb.run(F)
    keys = {nb.key()}
    nb.run("SCALE = 11")
    keys.add(nb.key())
    nb.run("""
        class Model:
            rate = 2
            def predict(self, x):
                return x * self.rate * SCALE + 1
    """)
    keys.add(nb.key())
    nb.run("Model.rate = 3")  # a class attribute set from outside
    keys.add(nb.key())
    assert len(keys) == 4
    assert nb.ns["f"](3) == 3 * 3 * 11 + 1 + 1


def test_comments_and_blank_lines_keep_the_key_docstrings_do_not(nb):
    nb.run("def helper(x):\n    return x\n")
    nb.run(F)
    old = nb.key()
    nb.run("""


        @cached(storage=storage, ttl=5)   # decorator options are not the function
        def f(x):
            # a comment

            return helper(x) + 1
    """)
    assert nb.key() == old
    nb.run('@cached(storage=storage)\ndef f(x):\n    "Now documented."\n    return helper(x) + 1\n')
    assert nb.key() != old


def test_closures_lambdas_and_defaults():
    def make(a):
        def inner(x):
            return x * a
        return inner

    assert function_identity(make(2)) != function_identity(make(3))
    assert function_identity(make(2)) == function_identity(make(2))
    one, two = lambda x: x + 1, lambda x: x + 2  # two lambdas on one line
    assert function_identity(one) != function_identity(two)

    namespaces: list[dict] = [{"__name__": "__main__"}, {"__name__": "__main__"}]
    for namespace, default in zip(namespaces, (1, 2), strict=True):
        exec(f"def with_default(x, y={default}):\n    return x + y\n", namespace)
    first, second = (function_identity(n["with_default"]) for n in namespaces)
    assert first != second  # the same code, another default


def test_closure_results_are_not_shared(storage):
    def make(a):
        @cached(storage=storage)
        def scaled(x):
            return x * a
        return scaled

    assert make(2)(10) == 20
    assert make(3)(10) == 30


def test_a_global_log_list_keeps_the_key_a_redefined_table_changes_it(nb):
    nb.run("""
        log = []
        TABLE = {"a": 1}
        @cached(storage=storage)
        def f(x):
            log.append(x)
            return TABLE[x]
    """)
    first = nb.key('f.key("a")')
    assert nb.ns["f"]("a") == 1
    nb.ns["log"].append("other")  # in place: not tracked, by design
    assert nb.key('f.key("a")') == first
    nb.run('TABLE = {"a": 2}')  # redefined in a cell: a new object, a new key
    assert nb.key('f.key("a")') != first
    assert nb.ns["f"]("a") == 2


def test_a_counter_the_function_assigns_is_not_an_input(nb):
    nb.run("""
        runs = 0
        @cached(storage=storage)
        def f(x):
            global runs
            runs += 1
            return x
    """)
    first = nb.key()
    nb.ns["f"](3), nb.ns["f"](4)
    assert nb.ns["runs"] == 2 and nb.key() == first


def test_self_reference_and_cycles(nb):
    nb.run("""
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
        PIPELINE = []
        @cached(storage=storage)
        def f(x):
            return even(x), len(PIPELINE)
        PIPELINE.append(f)
    """)
    assert nb.ns["f"](3) == (False, 1)
    old = nb.key()
    nb.run("def odd(n):\n    return n != 0 and not even(n - 1)\n")
    assert nb.key() != old


# -- real processes -----------------------------------------------------------------------


def _python(code: str, cwd: Path, **env: str) -> dict:
    # No .pyc: an edit in the same second with the same size would reuse a stale one.
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(REPO)]),
                       PYTHONDONTWRITEBYTECODE="1", **env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environment,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


FEATURES = """
SCALE = {scale}

def scale(x):
    return x * SCALE
"""

USES_FEATURES = """
    import json, pathlib, sys
    import features
    from labcache import cached

    @cached
    def f(x):
        return features.scale(x)

    before = f.key(3)
    pathlib.Path("features.py").write_text(sys.argv[1] if len(sys.argv) > 1 else "")
    print(json.dumps({"before": before, "after_edit": f.key(3), "value": f(3)}))
"""


def test_a_user_module_on_disk_stale_and_fresh_processes(tmp_path):
    source = FEATURES.format(scale=2)
    edited = FEATURES.format(scale=3)
    (tmp_path / "features.py").write_text(source)
    code = USES_FEATURES.replace('sys.argv[1] if len(sys.argv) > 1 else ""', repr(edited))
    stale = _python(code, tmp_path)
    # The file was edited under a running process: it runs the old code, so it
    # keeps the old key (it must not store 6 under the new code's key).
    assert stale["before"] == stale["after_edit"] and stale["value"] == 6
    fresh = _python(code, tmp_path)  # imports the edited file
    assert fresh["before"] != stale["before"] and fresh["value"] == 9
    (tmp_path / "features.py").write_text(source)
    again = _python(code, tmp_path)
    assert again["before"] == stale["before"]


def test_keys_do_not_depend_on_hash_seed_or_working_directory(tmp_path):
    code = """
        import dataclasses, enum, json, typing
        from labcache import cached
        NAMES = {"a", "b", "c"}
        class Color(enum.Enum):
            RED = 1
        @dataclasses.dataclass(frozen=True)
        class Config:
            rate: float = 0.5
            tags: frozenset = frozenset({"x", "y"})
        class Point(typing.NamedTuple):
            x: int
            y: str
        CONFIG, ORIGIN = Config(), Point(0, "o")
        def helper(x):
            return x in {"a", "b"}, sorted(NAMES), Color.RED, CONFIG.rate, ORIGIN
        @cached
        def f(x):
            return helper(x)
        print(json.dumps({"key": f.key("a"), "parts": f._function_identity().parts}))
    """
    (tmp_path / "other").mkdir()
    first = _python(code, tmp_path, PYTHONHASHSEED="1")
    second = _python(code, tmp_path / "other", PYTHONHASHSEED="2")
    assert first == second


SPAWNED = """
import json
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

from labcache import cached

FACTOR = 3

def helper(x):
    return x * FACTOR

@cached
def work(x):
    return helper(x)

def key_in_worker(x):
    return work.key(x), work.context

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        worker = pool.submit(key_in_worker, 5).result()
    print(json.dumps({"parent": [work.key(5), work.context], "worker": list(worker)}))
"""


def test_spawn_workers_key_main_functions_like_their_parent(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SPAWNED)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["parent"] == result["worker"]
    assert result["parent"][1] == "__main__.work"


def test_library_code_is_referred_to_by_name_and_packages_add_versions():
    import json as json_module

    def uses_json(x):
        return json_module.dumps(x)

    plain = cached(uses_json)
    versioned = cached(packages=("pytest",))(uses_json)
    assert "package pytest" in versioned._function_identity().parts
    assert not any(name.startswith("helper json") for name in plain._function_identity().parts)
    assert plain.key(1) != versioned.key(1)
    with pytest.raises(TypeError, match="packages"):
        cached(packages="pandas")(uses_json)


def test_code_changes_keep_keys_on_the_name_only(nb):
    nb.run("def helper(x):\n    return x\n")
    nb.run(F.replace("@cached(storage=storage)", "@cached(storage=storage, code_changes='keep')"))
    old = nb.key()
    nb.run("def helper(x):\n    return -x\n")
    assert nb.key() == old
    with pytest.raises(ValueError, match="code_changes"):
        cached(code_changes="ignore")(len)


def test_attributes_of_a_user_module_are_named_in_explain(tmp_path, monkeypatch, storage):
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc on reload
    (tmp_path / "features_mod.py").write_text(FEATURES.format(scale=2))
    features = importlib.import_module("features_mod")
    try:
        @cached(storage=storage)
        def f(x):
            return features.scale(x)

        assert f(3) == 6
        (tmp_path / "features_mod.py").write_text(FEATURES.format(scale=2).replace(
            "return x * SCALE", "return x * SCALE + 1"))
        assert f.explain(3).hit  # edited on disk, not re-imported: still the old code
        importlib.reload(features)
        assert f.explain(3).changed == ["helper features_mod.scale"]
        assert f(3) == 7
        features.SCALE = 5
        assert f.explain(3).changed == ["global features_mod.SCALE"]
    finally:
        sys.modules.pop("features_mod", None)


def test_an_autoreload_is_seen_at_the_next_call(nb, tmp_path, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "auto_mod.py").write_text("def helper(x):\n    return x\n")
    try:
        nb.run("import auto_mod\nfrom auto_mod import helper\n")
        nb.run(F)
        assert nb.ns["f"](3) == 4
        # What IPython's autoreload does: reload, then swap the new code into
        # the old function object that other names (our `helper`) still hold.
        (tmp_path / "auto_mod.py").write_text("def helper(x):\n    return -x\n")
        old = nb.ns["helper"]
        new = importlib.reload(nb.ns["auto_mod"]).helper
        old.__code__ = new.__code__
        assert nb.ns["f"](3) == -2
    finally:
        sys.modules.pop("auto_mod", None)


def test_methods_called_through_self_are_part_of_a_methods_code(nb):
    box = """
        class Box:
            def __init__(self, size):
                self.size = size
            def helper(self, x):
                return x * {factor}
            @cached(storage=storage)
            def area(self, x):
                return self.helper(x) * self.size
    """
    nb.run(box.format(factor=2))
    old = nb.key("Box(2).area.key(3)")
    assert "class Box" in nb.ns["Box"].area._function_identity().parts
    assert nb.key("Box(2).area(3)") == "12"
    nb.run(box.format(factor=3))
    assert nb.key("Box(2).area.key(3)") != old
    assert nb.key("Box(2).area(3)") == "18"


def test_a_global_that_cannot_be_inspected_never_fails_the_call(nb):
    nb.run("""
        class Lazy:
            def __getattribute__(self, name):
                raise RuntimeError("not loaded yet")
        PROXY = Lazy()
        @cached(storage=storage)
        def f(x):
            return x, PROXY is None
    """)
    assert nb.ns["f"](3) == (3, False)
