"""Run-directory layout and atomic writes: a file appears whole or not at all."""

from __future__ import annotations

import json
import math
import os
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


def append_jsonl(path: Path, row: dict) -> None:
    existing = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    write_text(path, existing + json.dumps(_clean(row), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
