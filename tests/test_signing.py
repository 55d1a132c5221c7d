"""Personal signing keys and a trust file, across real processes.

Each process is a fresh interpreter with its own ``LABCACHE_SIGNING_KEY``,
``LABCACHE_TRUSTED_KEYS`` and ``LABCACHE_SECRET``; it calls one cached
function whose result carries a marker that creates a file when unpickled,
so "never unpickled" is observed, not assumed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import xxhash

from labcache import CacheWarning, LocalStorage, cached, signing
from labcache import entry as entry_format
from labcache.errors import CorruptEntryError, KeyFileError, SignatureError

TEAM = "team-secret-for-tests-0123456789"
OTHER = "not-the-team-secret-9876543210"

SCRIPT = '''
import json, logging, os, sys, time, warnings
from pathlib import Path
from labcache import LocalStorage, cached, signing

root, log_dir, marker = sys.argv[1:4]
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


def touch(path):
    Path(path).touch()


class Marker:
    """Unpickling this value creates the marker file: proof the entry was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))


@cached(storage=LocalStorage(root))
def build(n):
    Path(log_dir, f"computed-{n}-{os.getpid()}-{time.monotonic_ns()}").touch()
    return {"n": n, "marker": Marker(marker)}


def call(n):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = build(n)
    return {"n": value["n"], "warnings": [str(w.message) for w in caught],
            "path": str(LocalStorage(root).entry_path(build.key(n), build.context)),
            "signer": repr(signing.current_signer()), "trust": repr(signing.current_trust())}


for line in sys.stdin:  # one call per line; a reply per call
    print(json.dumps(call(int(line))), flush=True)
'''


class Team:
    """Fresh interpreters running the script above, each with chosen keys."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.script = tmp_path / "job.py"
        self.script.write_text(SCRIPT)
        self.root, self.logs, self.marker = tmp_path / "store", tmp_path / "logs", tmp_path / "ran"
        self.logs.mkdir()
        self.keys = tmp_path / "keys"
        for name in ("alice", "bob", "mallory"):
            signing.keygen(name, self.keys)
        self.trusted = tmp_path / "trusted_keys"
        self.trust("alice", "bob")
        self.output: list[str] = []  # everything every process printed

    def trust(self, *names: str) -> None:
        lines = ["# the team's trusted keys", ""]
        lines += [(self.keys / f"{name}.pub").read_text().strip() for name in names]
        self.trusted.write_text("\n".join(lines) + "\n")

    def env(self, signer: str | None, trust: bool, secret: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABCACHE_")}
        env["LABCACHE_DIR"] = str(self.tmp / "default")
        if signer:
            env["LABCACHE_SIGNING_KEY"] = str(self.keys / f"{signer}.key")
        if trust:
            env["LABCACHE_TRUSTED_KEYS"] = str(self.trusted)
        if secret:
            env["LABCACHE_SECRET"] = secret
        return env

    def run(self, signer: str | None, trust: bool = True, secret: str | None = None,
            n: int = 3) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(self.script), str(self.root), str(self.logs), str(self.marker)],
            input=f"{n}\n", env=self.env(signer, trust, secret), capture_output=True,
            text=True, timeout=120, check=False)
        self.output += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def start(self, signer: str | None, trust: bool = True) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.script), str(self.root), str(self.logs), str(self.marker)],
            env=self.env(signer, trust, None), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    def computations(self) -> int:
        return len(list(self.logs.iterdir()))

    def loaded(self) -> bool:
        """Whether an entry was unpickled since the last call (and forget it)."""
        ran = self.marker.exists()
        if ran:
            self.marker.unlink()
        return ran

    def header(self, path: str) -> entry_format.Header:
        return entry_format.read_header(Path(path).read_bytes())

    def private_texts(self) -> list[str]:
        """Every form a private key could leak in: base64, hex, raw bytes."""
        found = []
        for key in self.keys.glob("*.key"):
            encoded = key.read_text().split()[1]
            raw = base64.b64decode(encoded)
            found += [encoded, raw.hex(), raw.decode("latin-1")]
        return found


def rewrite(path: Path, data: bytes) -> None:
    """Replace a read-only entry the way anyone with the folder's write bit can."""
    path.unlink()
    path.write_bytes(data)


def test_trusted_entries_are_shared_between_processes_with_different_keys(
        tmp_path: Path) -> None:
    team = Team(tmp_path)
    first = team.run("alice")
    assert team.computations() == 1 and first["warnings"] == []
    assert team.header(first["path"]).signer == "alice"
    shared = team.run("bob")  # another key, also trusted: loads alice's entry
    assert team.computations() == 1 and shared["warnings"] == [] and team.loaded()
    team.run("bob", n=4)
    back = team.run("alice", n=4)
    assert team.computations() == 2 and back["warnings"] == [] and team.loaded()
    assert team.header(back["path"]).signer == "bob"


def test_an_untrusted_signer_is_refused_never_unpickled_and_recomputed(tmp_path: Path) -> None:
    team = Team(tmp_path)
    team.run("mallory", trust=False)
    team.loaded()
    refused = team.run("alice")
    assert team.computations() == 2 and not team.loaded()
    assert any("'mallory', who is not in the trusted keys" in w for w in refused["warnings"])
    assert team.header(refused["path"]).signer == "alice"  # stored again, signed by alice
    assert team.run("bob")["warnings"] == [] and team.loaded() and team.computations() == 2


def test_an_unsigned_entry_is_refused_when_a_trust_file_is_set(tmp_path: Path) -> None:
    team = Team(tmp_path)
    team.run(None, trust=False)
    team.loaded()
    refused = team.run("alice")
    assert any("not signed" in w for w in refused["warnings"]), refused
    assert not team.loaded() and team.computations() == 2
    unchecked = team.run(None, trust=False)  # without a trust file nothing is checked
    assert unchecked["warnings"] == [] and team.loaded() and team.computations() == 2


def test_altered_entries_are_refused_naming_their_signer(tmp_path: Path) -> None:
    team = Team(tmp_path)
    path = Path(team.run("alice")["path"])
    team.loaded()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20  # damaged or altered: the checksum no longer matches
    rewrite(path, bytes(data))
    altered = team.run("bob")
    assert any("checksum" in w and "'alice'" in w for w in altered["warnings"]), altered
    assert not team.loaded() and team.computations() == 2

    # A forger changes the metadata and fixes the checksum (it is no secret).
    data = bytearray(path.read_bytes())
    assert team.header(str(path)).signer == "bob"
    at = 64 + int.from_bytes(data[32:36], "little")
    where = data.index(b'"user":"') + 8
    data[where] ^= 0x01
    data[16:32] = xxhash.xxh3_128(bytes(data[at:])).digest()
    rewrite(path, bytes(data))
    forged = team.run("alice")
    assert any("signature by 'bob' does not verify" in w for w in forged["warnings"]), forged
    assert not team.loaded() and team.computations() == 3


def test_a_removed_line_is_no_longer_trusted_at_the_next_call(tmp_path: Path) -> None:
    team = Team(tmp_path)
    team.run("alice")
    team.loaded()
    worker = team.start("bob")
    try:
        def call(n: int) -> dict[str, Any]:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(f"{n}\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            assert line, worker.stderr.read() if worker.stderr else ""
            result: dict[str, Any] = json.loads(line)
            return result

        assert call(3)["warnings"] == [] and team.loaded() and team.computations() == 1
        team.trust("bob")  # alice leaves the team: her line is deleted
        refused = call(3)  # the same running process, the very next call
        assert any("'alice', who is not in the trusted keys" in w for w in refused["warnings"])
        assert not team.loaded() and team.computations() == 2
        assert call(3)["warnings"] == [] and team.loaded()  # bob's own entry now
        assert "names=['bob']" in call(3)["trust"]
    finally:
        worker.kill()
        worker.communicate(timeout=30)


def test_hmac_and_ed25519_together(tmp_path: Path) -> None:
    team = Team(tmp_path)
    team.run("alice", secret=TEAM)
    team.loaded()
    both = team.run("bob", secret=TEAM)  # both checks pass: shared
    assert both["warnings"] == [] and team.loaded() and team.computations() == 1
    header = team.header(both["path"])
    assert header.signer == "alice" and header.hmac is True

    wrong_secret = team.run("bob", secret=OTHER)  # a trusted signer, but not our secret
    assert any("LABCACHE_SECRET" in w for w in wrong_secret["warnings"]), wrong_secret
    assert not team.loaded() and team.computations() == 2

    team.run("mallory", trust=False, secret=TEAM)  # has the secret, but is no trusted signer
    team.loaded()
    untrusted = team.run("alice", secret=TEAM)
    assert any("'mallory'" in w for w in untrusted["warnings"]), untrusted
    assert not team.loaded() and team.computations() == 4

    team.run("alice", trust=False, n=5)  # a trusted key but no HMAC: refused where both
    team.loaded()                          # checks are asked for
    no_hmac = team.run("bob", secret=TEAM, n=5)
    assert any("not signed but LABCACHE_SECRET" in w for w in no_hmac["warnings"]), no_hmac
    assert not team.loaded()


def test_private_keys_never_appear_in_output_logs_or_reprs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    team = Team(tmp_path)
    team.run("alice", secret=TEAM)
    team.run("mallory", trust=False)
    team.run("bob")
    secrets = team.private_texts()
    key = team.keys / "alice.key"
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(key))
    signer = signing.current_signer()
    assert signer is not None and signer.name == "alice"
    shown = [repr(signer), str(signer), repr(signing.load_trust(team.trusted)), *team.output]
    bad = tmp_path / "bad.key"  # a key file with one token too many
    bad.write_text(key.read_text().strip() + " extra\n")
    bad.chmod(0o600)
    open_key = tmp_path / "open.key"  # readable by others
    open_key.write_text(key.read_text())
    open_key.chmod(0o644)
    trust_with_private = tmp_path / "mixed"  # a private key pasted into the trust file
    trust_with_private.write_text(key.read_text())
    for loader, path in ((signing.load_signer, bad), (signing.load_signer, open_key),
                         (signing.load_trust, trust_with_private)):
        with pytest.raises(KeyFileError) as caught:
            loader(path)
        assert str(path) in str(caught.value)
        shown.append(str(caught.value))
    assert "private key" in shown[-1]
    assert "chmod 600" in shown[-2]
    shown += [record.getMessage() for record in caplog.records]
    assert len(shown) > 8
    for text in shown:
        for secret in secrets:
            assert secret not in text


def test_keygen_refuses_to_overwrite_and_writes_a_private_key_no_one_else_reads(
        tmp_path: Path) -> None:
    old = os.umask(0)  # even with nothing masked, the key is never readable by others
    try:
        private, public = signing.keygen("dana", tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    tag, key, name = public.read_text().split()
    assert (tag, name, len(base64.b64decode(key))) == ("labcache-ed25519", "dana", 32)
    before = private.read_bytes()
    with pytest.raises(FileExistsError, match="never overwrites"):
        signing.keygen("dana", tmp_path / "k")
    assert private.read_bytes() == before
    with pytest.raises(ValueError, match="not allowed"):
        signing.keygen("../evil", tmp_path / "k")


def test_the_trust_file_is_parsed_again_only_after_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signing.keygen("erin", tmp_path)
    signing.keygen("fred", tmp_path)
    trusted = tmp_path / "trusted"
    trusted.write_text((tmp_path / "erin.pub").read_text())
    monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(trusted))
    parses: list[str] = []
    real = signing.TrustList.parse.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(signing.TrustList, "parse",
                        classmethod(lambda cls, text, path: parses.append(path) or real(
                            cls, text, path)))
    first = signing.current_trust()
    assert first is not None and first.names() == ["erin"]
    for _ in range(3):
        assert signing.current_trust() is first
    trusted.write_text(trusted.read_text() + (tmp_path / "fred.pub").read_text())
    changed = signing.current_trust()
    assert changed is not None and changed.names() == ["erin", "fred"]
    assert len(parses) == 2
    trusted.unlink()
    with pytest.raises(KeyFileError, match="cannot read the trusted keys file"):
        signing.current_trust()


def test_a_missing_trust_file_fails_the_call_and_deletes_nothing(
        storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @cached(storage=storage)
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == 4
    monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(tmp_path / "no-such-file"))
    with pytest.raises(KeyFileError, match="no-such-file"):
        double(2)
    assert storage.check_if_exists(double.key(2), double.context)


def test_signed_loads_hash_every_byte_once_while_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest the signatures cover is fed in the checksum's read loop:
    each byte of header and payload exactly once, big buffers included."""
    signing.keygen("gail", tmp_path)
    (tmp_path / "trusted").write_text((tmp_path / "gail.pub").read_text())
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "gail.key"))
    monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(tmp_path / "trusted"))
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    value = {"big": bytes(range(256)) * 20_000, "small": [1, 2, 3]}
    path = tmp_path / "entry"
    path.write_bytes(bytes(entry_format.encode(value, {"function": "f"})))
    fed: list[int] = []
    real = entry_format._seal.new_digest

    class Counting:
        def __init__(self, algorithm: int) -> None:
            self.inner = real(algorithm)

        def update(self, chunk: Any) -> None:
            fed.append(memoryview(chunk).nbytes)
            self.inner.update(chunk)

        def digest(self) -> bytes:
            return bytes(self.inner.digest())

    monkeypatch.setattr(entry_format._seal, "new_digest", Counting)
    data = path.read_bytes()
    covered = len(data) - 64 - int.from_bytes(data[32:36], "little")
    with path.open("rb") as file:
        for source in (data, file):
            fed.clear()
            loaded, header = entry_format.load(source)
            assert loaded == value and header.signer == "gail"
            assert sum(fed) == covered  # one pass: nothing hashed twice
            assert max(fed) <= 256 * 2**10  # in slices, while still in the CPU cache


def test_memory_mapped_loads_check_the_signer(
        storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("hana", "ivan"):
        signing.keygen(name, tmp_path)
    (tmp_path / "trusted").write_text((tmp_path / "hana.pub").read_text())
    monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(tmp_path / "trusted"))
    calls: list[int] = []

    @cached(storage=storage, mmap_mode="r")
    def blob(n: int) -> bytes:
        calls.append(n)
        return bytes(n) * 100_000

    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "ivan.key"))
    assert len(blob(3)) == 300_000
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "hana.key"))
    with pytest.warns(CacheWarning, match="'ivan', who is not in the trusted keys"):
        assert len(blob(3)) == 300_000
    assert len(blob(3)) == 300_000 and calls == [3, 3]


def test_entries_of_older_formats_are_a_miss_with_a_warning(storage: LocalStorage) -> None:
    calls: list[int] = []

    @cached(storage=storage)
    def triple(x: int) -> int:
        calls.append(x)
        return 3 * x

    assert triple(1) == 3
    path = storage.entry_path(triple.key(1), triple.context)
    rewrite(path, b"LCE2" + path.read_bytes()[4:])
    with pytest.warns(CacheWarning, match="format 2 was written by an older"):
        assert triple(1) == 3
    assert calls == [1, 1]


def test_decode_names_what_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signing.keygen("judy", tmp_path)
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "judy.key"))
    data = bytes(entry_format.encode([1, 2], {"function": "f"}))
    monkeypatch.delenv("LABCACHE_SIGNING_KEY")
    assert entry_format.decode(data)[1].signer == "judy"  # nothing asked, nothing checked
    empty = tmp_path / "trusted"
    empty.write_text("# nobody yet\n")
    monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(empty))
    with pytest.raises(SignatureError, match="'judy'"):
        entry_format.decode(data)
    assert entry_format.decode(data, verify_key=False)[0] == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CorruptEntryError):
            entry_format.decode(data[:-1])


def test_the_monitor_shows_signers_and_marks_entries_it_would_refuse(
        storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets")
    from labcache.jupyter.widget import Monitor

    for name in ("kate", "liam"):
        signing.keygen(name, tmp_path)
    (tmp_path / "trusted").write_text((tmp_path / "kate.pub").read_text())

    @cached(storage=storage)
    def square(x: int) -> int:
        return x * x

    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "kate.key"))
    square(1)
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "liam.key"))
    square(2)
    monkeypatch.delenv("LABCACHE_SIGNING_KEY")
    square(3)
    panel = Monitor(storage, refresh_every=None)
    try:
        panel.function_choice.value = square.context
        assert "kate" in panel.html() and "labcache-entry labcache-refused" not in panel.html()
        monkeypatch.setenv("LABCACHE_TRUSTED_KEYS", str(tmp_path / "trusted"))
        panel.refresh()
        shown = panel.html()
    finally:
        panel.close()
    assert shown.count('class="labcache-entry labcache-refused"') == 2
    assert "refused here: signer liam not trusted" in shown
    assert "refused here: unsigned" in shown


def test_importing_labcache_loads_no_cryptography(tmp_path: Path) -> None:
    probe = ("import sys, labcache, labcache.entry, labcache.signing; "
             "print(sorted(m for m in ('cryptography', 'blake3', 'hashlib', 'hmac') "
             "if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCACHE_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    assert "cryptography" not in done.stdout and "blake3" not in done.stdout, done.stdout


def test_nothing_secret_shows_in_the_reprs_of_signing_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signing.keygen("mona", tmp_path)
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(tmp_path / "mona.key"))
    plan = entry_format._seal.plan(TEAM.encode())
    policy = entry_format._seal.Policy(TEAM.encode(), None)
    seed = (tmp_path / "mona.key").read_text().split()[1]
    for shown in (repr(plan), repr(policy)):
        assert TEAM not in shown and seed not in shown and "mona" in repr(plan)


def test_an_unusable_signing_key_fails_before_computing(
        storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signing.keygen("nina", tmp_path)
    key = tmp_path / "nina.key"
    key.chmod(0o644)  # readable by others: refused
    monkeypatch.setenv("LABCACHE_SIGNING_KEY", str(key))
    calls: list[int] = []

    @cached(storage=storage)
    def slow(x: int) -> int:
        calls.append(x)
        return x

    with pytest.raises(KeyFileError, match="chmod 600"):
        slow(1)
    assert calls == []
    key.chmod(0o600)
    assert slow(1) == 1 and calls == [1]


def test_environment_changes_reach_the_next_read_from_any_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from labcache import signing

    name = "LABCACHE_TEST_ENV_CHANGE"
    monkeypatch.delenv(name, raising=False)
    assert signing.env(name) is None and signing.env(name) is None  # now remembered
    setter = threading.Thread(target=lambda: os.environ.__setitem__(name, "on"))
    setter.start()
    setter.join()
    try:
        assert signing.env(name) == "on"
    finally:
        del os.environ[name]
    assert signing.env(name) is None

