"""How RedisStorage writes a big entry's chunks, publishes them, and finds
the chunks a killed writer left.

* Chunks are written under a fresh generation id, each created with a
  provisional expiry (``PENDING_SECONDS``, renewed while the store runs), so
  a writer killed before publishing leaves chunks that expire by themselves.
* One Lua script publishes: it checks that every chunk is still there,
  removes their expiry, swaps the manifest in, records the entry's
  generation and retires the replaced entry's chunks, all at once.  A
  published entry never names a chunk that can expire, and no moment exists
  where a killed process leaves chunks nobody will remove.
* A hash per context, ``<prefix>:g:<context>``, maps entry names to their
  generation, kept by the same scripts: the sweep tells live chunks from
  orphans without reading, and so touching, the entries.

What the sweep still finds: chunks of writers killed less than
``PENDING_SECONDS`` ago (age: time since their expiry was last renewed), and
chunks without expiry that no entry names (written by labcache before this
scheme, or whose entry Redis evicted or someone deleted by hand; age: their
idle time, unknown under an LFU policy, and then they are never removed).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from ..base import Orphan
from ._redis_client import glob_escape

__all__ = ["DELETE", "INLINE", "INLINE_LIMIT", "LINGER_SECONDS", "MANIFEST", "PENDING_SECONDS",
           "PUBLISH", "REMOVE", "find", "remove", "write"]

INLINE = b"I"  # the value is the entry itself
MANIFEST = b"M"  # the value names the chunks holding the entry
INLINE_LIMIT = 1 << 20
#: Seconds a replaced entry's chunks stay readable, for readers in the middle.
LINGER_SECONDS = 60
#: Provisional expiry of chunks not yet published; renewed every quarter of it.
PENDING_SECONDS = 900

# Drops the chunks of `old` (a replaced or deleted entry's value): at once,
# or after `linger` seconds.  Expects locals `old`, `prefix`, `linger`.
_RETIRE = """
if old and string.sub(old, 1, 1) == 'M' then
  local ok, manifest = pcall(cjson.decode, string.sub(old, 2))
  if ok and type(manifest) == 'table' and manifest.gen and manifest.sizes then
    for i = 0, #manifest.sizes - 1 do
      local chunk = prefix .. manifest.gen .. ':' .. i
      if linger > 0 then redis.call('EXPIRE', chunk, linger) else redis.call('DEL', chunk) end
    end
  end
end
"""
# KEYS: entry, sizes hash, generations hash, the new chunks.
# ARGV: value, name, size, generation ('' if inline), chunk key prefix, linger.
PUBLISH = """
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return redis.error_reply('a chunk of this entry vanished before the entry was published '
      .. '(evicted by the memory policy, or unrefreshed past its provisional expiry); '
      .. 'nothing was stored')
  end
end
for i = 4, #KEYS do redis.call('PERSIST', KEYS[i]) end
local old, prefix, linger = redis.call('GET', KEYS[1]), ARGV[5], tonumber(ARGV[6])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '' then redis.call('HDEL', KEYS[3], ARGV[2])
else redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) end
""" + _RETIRE + "return 1"
# KEYS: entry, sizes hash, generations hash.  ARGV: name, chunk key prefix, linger.
DELETE = """
local old, prefix, linger = redis.call('GET', KEYS[1]), ARGV[2], tonumber(ARGV[3])
if not old then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
""" + _RETIRE + "return 1"
# KEYS: one generation's chunks.  ARGV: older_than, pending, linger (ms).
# Deletes them all, or none if any was written or renewed too recently.
REMOVE = """
local older, pending, linger = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -1 then
    local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', KEYS[i])
    if not ok or not idle or idle * 1000 < older then return 0 end
  elseif ttl >= 0 and (ttl <= linger or pending - ttl < older) then
    return 0
  end
end
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""


def write(client: Any, chunk_key: Callable[[str, int], str], pieces: Iterable[Any],
          chunk_size: int, keys: list[str]) -> tuple[bytes, str, int]:
    """Write ``pieces`` as provisional chunks, appending their names to
    ``keys`` as they are made (so a caller can drop them if this fails):
    ``(manifest value, generation, size)``.  One chunk per round trip; a
    chunk is created with its expiry in one command, so none is ever without."""
    generation = secrets.token_hex(8)
    sizes: list[int] = []
    pipe = client.pipeline(transaction=False)
    renewed = time.monotonic()
    for piece in pieces:
        if sizes and sizes[-1] + len(piece) <= chunk_size:
            pipe.append(keys[-1], piece)
        else:
            if sizes:
                pipe.execute()
            if time.monotonic() - renewed > PENDING_SECONDS / 4:  # a slow store: renew
                for key in keys:
                    pipe.expire(key, PENDING_SECONDS)
                renewed = time.monotonic()
            keys.append(chunk_key(generation, len(keys)))
            sizes.append(0)
            pipe.set(keys[-1], piece, ex=PENDING_SECONDS)
        sizes[-1] += len(piece)
    pipe.execute()
    manifest = MANIFEST + json.dumps({"gen": generation, "sizes": sizes}).encode()
    return manifest, generation, sum(sizes)


def find(storage: Any) -> list[Orphan]:
    """Chunks no entry names, grouped by generation (see the module notes).

    Chunks are listed before entries: a store published in between is then
    seen as live, and its chunks were touched by publishing anyway.
    """
    start = f"{storage.prefix}:c:"
    generations: dict[str, list[str]] = {}
    for key in storage.client.scan_iter(match=glob_escape(start) + "*", count=1000):
        generations.setdefault(key.decode()[len(start):].rpartition(":")[0], []).append(
            key.decode())
    if not generations:
        return []
    live = _live_generations(storage)
    found = (_describe(storage.client, start, generation, sorted(keys))
             for generation, keys in sorted(generations.items()) if generation not in live)
    return [orphan for orphan in found if orphan is not None]


def remove(storage: Any, orphan: Orphan, older_than: float) -> bool:
    """Delete one generation's chunks, all or none, if still idle long enough."""
    args = [int(older_than * 1000), PENDING_SECONDS * 1000, LINGER_SECONDS * 1000]
    return bool(storage._scripts["orphans"](keys=list(orphan.handle), args=args))


def _live_generations(storage: Any) -> set[str]:
    """The generations entries name now, from the per-context hashes."""
    start = f"{storage.prefix}:e:"
    entries: dict[str, list[str]] = {}
    for key in storage.client.scan_iter(match=glob_escape(start) + "*", count=1000):
        context, _, name = key.decode()[len(start):].partition(":")  # quoted: no ':'
        entries.setdefault(unquote(context), []).append(name)
    live: set[str] = set()
    for context, names in entries.items():
        known = {k.decode(): v.decode() for k, v in
                 storage.client.hgetall(storage._gens_key(context)).items()}
        known.update(_backfill(storage, context, [n for n in names if n not in known]))
        live.update(known[name] for name in names if name in known)
    return live


def _backfill(storage: Any, context: str, names: list[str]) -> dict[str, str]:
    """Generations of big entries stored before the hash existed, read once
    from their manifests and written down (``HSETNX``: a store that
    published meanwhile has already written the truth)."""
    if not names:
        return {}
    sizes = storage.client.hmget(storage._sizes_key(context), names)
    found = {}
    for name, size in zip(names, sizes, strict=True):
        if size is not None and int(size) <= INLINE_LIMIT:
            continue
        try:
            key = storage._entry_key(name, context)
        except ValueError:  # a key no labcache wrote: not an entry
            continue
        if storage._untouched("getrange", key, 0, 0) != MANIFEST:
            continue
        value = storage._untouched("get", key)
        if value and value[:1] == MANIFEST:
            found[name] = str(json.loads(value[1:])["gen"])
            storage.client.hsetnx(storage._gens_key(context), name, found[name])
    return found


def _describe(client: Any, start: str, generation: str, keys: list[str]) -> Orphan | None:
    """Size and age of one generation's chunks, without touching them; None
    when they are gone or being retired (they expire within a minute)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key).memory_usage(key, samples=0).object("idletime", key)
    answers = pipe.execute(raise_on_error=False)
    size, ages = 0, []
    for ttl, used, idle in zip(answers[::3], answers[1::3], answers[2::3], strict=True):
        if ttl == -2:  # gone since the scan
            continue
        if 0 <= ttl <= LINGER_SECONDS * 1000:
            return None
        size += used if isinstance(used, int) else 0
        if ttl > 0:  # provisional: its age is the time since it was last renewed
            ages.append(PENDING_SECONDS - ttl / 1000)
        else:
            ages.append(float(idle) if isinstance(idle, int) else None)
    if not ages:
        return None
    age = None if None in ages else max(min(a for a in ages if a is not None), 0.0)
    return Orphan("chunks", f"{start}{generation}:* ({len(ages)} keys)", size, age, tuple(keys))
