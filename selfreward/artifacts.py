"""Run-directory layout and atomic writes: a file appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path


def iter_dir(run_dir: Path, i: int) -> Path:
    d = Path(run_dir) / f"iter_{i:03d}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _clean(value):
    """JSON has no NaN: write null instead, so every tool can read the files."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, flush to disk, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(_clean(r), ensure_ascii=False) + "\n" for r in rows))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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


def jsonl_stage(d: Path, name: str, key: dict, compute) -> tuple[list[dict], dict]:
    """Rows of `d/name.jsonl` from a completed stage, or compute() -> (rows, stats), written atomically, manifest last."""
    if (m := completed(d, name, key)) is not None:
        return read_jsonl(Path(d) / f"{name}.jsonl"), m["stats"]
    t = time.time()
    rows, stats = compute()
    stats = {**stats, "seconds": time.time() - t}
    write_jsonl(Path(d) / f"{name}.jsonl", rows)
    mark_complete(d, name, key, [f"{name}.jsonl"], stats)
    return rows, stats


def sharded(d: Path, name: str, key: dict, items: list, shard_size: int, compute) -> tuple[list[dict], dict]:
    """Like jsonl_stage, in shards that are each written atomically, so a killed stage resumes where it stopped.

    `compute(part, shard_index) -> rows`; shard i always holds the same items, so its seed and rows do not
    depend on whether the run was interrupted.
    """
    shard_dir = Path(d) / f"{name}.shards"
    if (m := completed(d, name, key)) is not None:
        shutil.rmtree(shard_dir, ignore_errors=True)  # a kill after the manifest, before the clean-up
        return read_jsonl(Path(d) / f"{name}.jsonl"), m["stats"]
    t = time.time()
    stamp = shard_dir / "key.json"
    if stamp.exists() and json.loads(stamp.read_text()) != key:
        shutil.rmtree(shard_dir)  # shards from another config: never mix them in
    write_json(stamp, key)
    rows: list[dict] = []
    for k, start in enumerate(range(0, len(items), shard_size)):
        path = shard_dir / f"{k:05d}.jsonl"
        if not path.exists():
            write_jsonl(path, compute(items[start : start + shard_size], k))
        rows += read_jsonl(path)
    stats = {"seconds": time.time() - t}
    write_jsonl(Path(d) / f"{name}.jsonl", rows)
    mark_complete(d, name, key, [f"{name}.jsonl"], stats)
    shutil.rmtree(shard_dir, ignore_errors=True)
    return rows, stats


def clean_temporaries(run_dir: Path) -> int:
    """Remove temporary files a killed run left behind (names start with '.' and hold '.tmp-')."""
    n = 0
    for p in Path(run_dir).rglob(".*.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n
