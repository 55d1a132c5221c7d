"""``labcache keygen``, ``info`` (signer, signed) and ``ls --by/--since``, as a person runs them."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, signing
from labcache.entry import encode

PATIENCE = 60.0


def run(*args: str, env: dict[str, str] | None = None, check: int | None = 0,
        umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``labcache ARGS``; asserts the exit code unless ``check`` is None."""
    done = subprocess.run(
        [sys.executable, "-m", "labcache", *args], capture_output=True, text=True,
        timeout=PATIENCE, env={**os.environ, "COLUMNS": "200", **(env or {})},
        preexec_fn=None if umask is None else (lambda: os.umask(umask)), check=False)
    if check is not None:
        assert done.returncode == check, (done.stdout, done.stderr)
    return done


def private_forms(key: Path) -> list[str]:
    encoded = key.read_text().split()[1]
    return [encoded, base64.b64decode(encoded).hex()]


def test_keygen_writes_a_0600_key_and_a_one_line_pub(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    done = run("keygen", "alice", "--out", str(out), umask=0)
    key, pub = out / "alice.key", out / "alice.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600  # even with an empty umask
    line = pub.read_text()
    assert line.count("\n") == 1
    tag, public, name = line.split()
    assert (tag, name, len(base64.b64decode(public))) == ("labcache-ed25519", "alice", 32)
    assert line.strip() in done.stdout and "LABCACHE_SIGNING_KEY" in done.stdout
    data = json.loads(run("keygen", "bob", "--out", str(out), "--json").stdout)
    assert data["public_key"] == str(out / "bob.pub") and data["name"] == "bob"
    for text in (done.stdout, done.stderr, json.dumps(data)):
        for secret in private_forms(key) + private_forms(out / "bob.key"):
            assert secret not in text


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    run("keygen", "alice", "--out", str(tmp_path))
    before = (tmp_path / "alice.key").read_bytes(), (tmp_path / "alice.pub").read_bytes()
    again = run("keygen", "alice", "--out", str(tmp_path), check=2)
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "Traceback" not in again.stderr
    assert ((tmp_path / "alice.key").read_bytes(), (tmp_path / "alice.pub").read_bytes()) == before
    (tmp_path / "carol.pub").write_text("someone else's\n")  # half a pair is not overwritten
    run("keygen", "carol", "--out", str(tmp_path), check=2)
    assert not (tmp_path / "carol.key").exists()
    assert "not allowed" in run("keygen", "a/b", "--out", str(tmp_path), check=2).stderr
    assert "--out" in run("keygen", "dave", check=2).stderr


@pytest.fixture
def signed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A storage with entries of one function: alice's (now), bob's (3 days
    old) and an unsigned one made by user carol (now)."""
    keys = tmp_path / "keys"
    for name in ("alice", "bob"):
        signing.keygen(name, keys)
    store = LocalStorage(tmp_path / "store")
    now = time.time()
    made = {}
    for key, signer, user, created in (("a1" * 16, "alice", "al", now),
                                       ("b2" * 16, "bob", "bo", now - 3 * 86400),
                                       ("c3" * 16, None, "carol", now)):
        if signer:
            monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(keys / f"{signer}.key"))
        else:
            monkeypatch.delenv("LABCACHE_SIGNING_KEY", raising=False)
        meta = {"function": "demo.f", "key": key, "user": user, "host": "gpu-1",
                "created": created, "compute_seconds": 1.5, "arguments": {"x": signer},
                "code": {"helper demo.g": "ab12"}, "python": "3.11", "labcache": "0.1.0"}
        store.upload_file(encode(signer, meta), key, "demo.f")
        made[signer or "carol"] = key
    return {"url": f"file://{store.root}", "keys": keys, "made": made}


def test_info_shows_the_signer_and_that_the_entry_is_signed(
        signed_store: dict[str, Any], tmp_path: Path) -> None:
    url, made = signed_store["url"], signed_store["made"]
    data = json.loads(run("info", made["alice"][:6], "--storage", url, "--json").stdout)
    assert data["signer"] == "alice" and data["signed"] is True and data["hmac"] is False
    assert data["by"] == "al@gpu-1" and data["compute_seconds"] == 1.5
    assert data["code"] == {"helper demo.g": "ab12"}  # recorded parts shown as they are
    assert data["refused_here"] is None
    unsigned = json.loads(run("info", made["carol"][:6], "--storage", url, "--json").stdout)
    assert unsigned["signer"] is None and unsigned["signed"] is False
    text = run("info", made["alice"], "--storage", url).stdout
    assert any(line.split() == ["signer", "alice"] for line in text.splitlines()), text

    trusted = tmp_path / "trusted"
    trusted.write_text((signed_store["keys"] / "bob.pub").read_text())
    env = {"LABCACHE_TRUSTED_KEYS": str(trusted)}
    data = json.loads(run("info", made["alice"][:6], "--storage", url, "--json", env=env).stdout)
    assert data["refused_here"] == "signer alice not trusted"
    data = json.loads(run("info", made["bob"][:6], "--storage", url, "--json", env=env).stdout)
    assert data["refused_here"] is None


def ls_keys(*args: str, url: str) -> list[str]:
    data = json.loads(run("ls", *args, "--storage", url, "--json").stdout)
    assert data["total"] == len(data["entries"])
    return sorted(row["key"] for row in data["entries"])


def test_ls_filters_by_signer_user_and_age(signed_store: dict[str, Any]) -> None:
    url, made = signed_store["url"], signed_store["made"]
    assert ls_keys("--by", "alice", url=url) == [made["alice"]]  # the signer's name
    assert ls_keys("--by", "carol", url=url) == [made["carol"]]  # a user's name
    assert ls_keys("--by", "bo@gpu-1", url=url) == [made["bob"]]  # user@host
    assert ls_keys("--since", "2d", url=url) == sorted([made["alice"], made["carol"]])
    assert ls_keys("--since", "4d", url=url) == sorted(made.values())
    assert ls_keys("--by", "bob", "--since", "2d", url=url) == []
    assert ls_keys("f", "--by", "bob", url=url) == [made["bob"]]
    text = run("ls", "--by", "alice", "--storage", url).stdout
    assert "alice" in text and made["alice"][:12] in text and made["bob"][:12] not in text
    assert "no matching entries" in run("ls", "--by", "zed", "--storage", url).stdout
    bad = run("ls", "--since", "soon", "--storage", url, check=2)
    assert "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_ls_of_a_function_shows_signers(signed_store: dict[str, Any]) -> None:
    rows = json.loads(run("ls", "f", "--storage", signed_store["url"], "--json").stdout)
    assert sorted(str(r["signer"]) for r in rows["entries"]) == ["None", "alice", "bob"]
    text = run("ls", "f", "--storage", signed_store["url"]).stdout
    assert "SIGNER" in text.upper() and "alice" in text
