"""Run-directory layout and atomic writes: a file appears whole or not at all."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from selfreward.records import Record


def cache_dir(kind: str) -> Path:
    """`$SELFREWARD_CACHE/KIND` (default `~/.cache/selfreward/KIND`): what outlives a run (built models, converted
    weights)."""
    return Path(os.environ.get("SELFREWARD_CACHE", Path.home() / ".cache" / "selfreward")) / kind


def _clean(value):
    """JSON has no NaN: write null instead, so every tool can read the files."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@contextmanager
def atomic(path: Path):
    """Yield a temporary path beside `path` (a file or a directory); on success it is renamed into place, so `path`
    appears whole or not at all. A leftover temporary (a killed run) is removed by `clean_temporaries`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write atomically, flushed to disk before the rename."""
    with atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, rows: list) -> None:
    """One JSON line per row (a record's `to_row()`, or a dict); NaN is written as null."""
    lines = (json.dumps(_clean(r.to_row() if isinstance(r, Record) else r), ensure_ascii=False) + "\n" for r in rows)
    write_text(path, "".join(lines))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: Path, record: type[Record] | None = None) -> list:
    """The rows of a JSONL file, as dicts or as `record`s (a float field written as null reads back as NaN)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if record is None:
        return rows
    floats = [f.name for f in dataclasses.fields(record) if f.type == "float"]
    for row in rows:
        for name in floats:
            if name in row and row[name] is None:
                row[name] = math.nan
    return [record.from_row(r) for r in rows]


# ---- stage manifests: a stage is complete when its manifest, written last, matches its key --------


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def completed(d: Path, name: str, key: dict) -> dict | None:
    """The stage's manifest if the stage finished with this key (config hash, inputs), else None."""
    man = Path(d) / f"{name}.manifest.json"
    if not man.exists():
        return None
    m = json.loads(man.read_text())
    if m.get("key") != key:
        return None
    if any(not (Path(d) / f).exists() or file_hash(Path(d) / f) != h for f, h in m.get("files", {}).items()):
        return None
    return m


def mark_complete(d: Path, name: str, key: dict, files: list[str], stats: dict | None = None) -> None:
    write_json(Path(d) / f"{name}.manifest.json",
               {"key": key, "files": {f: file_hash(Path(d) / f) for f in files}, "stats": stats or {}})


class IterDir:
    """One iteration's directory (`RUN/iter_NNN/`) and its stages. A stage is computed once: run again with the same
    `key` (config hash, iteration), a completed stage is read back, and a sharded one continues from its last shard."""

    def __init__(self, run_dir: Path, iteration: int, digest: str):
        self.path = Path(run_dir) / f"iter_{iteration:03d}"
        self.path.mkdir(parents=True, exist_ok=True)
        self.iteration, self.key = iteration, {"config": digest, "iteration": iteration}

    def done(self, name: str) -> dict | None:
        """The stage's stats if it completed under this key, else None."""
        m = completed(self.path, name, self.key)
        return None if m is None else m["stats"]

    def mark(self, name: str, files: list[str], stats: dict) -> None:
        mark_complete(self.path, name, self.key, files, stats)

    def stage(self, name: str, record: type[Record], compute) -> tuple[list, dict]:
        """`name.jsonl` as records: read back, or `compute() -> (records, stats)` written atomically, manifest last."""
        if (stats := self.done(name)) is not None:
            return read_jsonl(self.path / f"{name}.jsonl", record), stats
        t = time.time()
        rows, stats = compute()
        stats = {**stats, "seconds": time.time() - t}
        write_jsonl(self.path / f"{name}.jsonl", rows)
        self.mark(name, [f"{name}.jsonl"], stats)
        return rows, stats

    def sharded(self, name: str, record: type[Record], items: list, shard_size: int, compute) -> tuple[list, dict]:
        """Like `stage`, in shards each written atomically: `compute(part, shard_index) -> records`. Shard k always
        holds the same items, so its seed and rows do not depend on whether the run was interrupted."""
        shard_dir = self.path / f"{name}.shards"
        if (stats := self.done(name)) is not None:
            shutil.rmtree(shard_dir, ignore_errors=True)  # a kill after the manifest, before the clean-up
            return read_jsonl(self.path / f"{name}.jsonl", record), stats
        t = time.time()
        stamp = shard_dir / "key.json"
        if stamp.exists() and json.loads(stamp.read_text()) != self.key:
            shutil.rmtree(shard_dir)  # shards from another config: never mix them in
        write_json(stamp, self.key)
        rows: list = []
        for k, start in enumerate(range(0, len(items), shard_size)):
            path = shard_dir / f"{k:05d}.jsonl"
            if not path.exists():
                write_jsonl(path, compute(items[start : start + shard_size], k))
            rows += read_jsonl(path, record)
        stats = {"seconds": time.time() - t}
        write_jsonl(self.path / f"{name}.jsonl", rows)
        self.mark(name, [f"{name}.jsonl"], stats)
        shutil.rmtree(shard_dir, ignore_errors=True)
        return rows, stats


def clean_temporaries(run_dir: Path) -> int:
    """Remove temporary files a killed run left behind (names start with '.' and hold '.tmp-')."""
    n = 0
    for p in Path(run_dir).rglob(".*.tmp-*"):
        _remove(p)
        n += 1
    return n
