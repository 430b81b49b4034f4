"""`dry_run=true`: what a run would do, checked without loading weights or touching the network.

Memory figures are estimates from the architecture (a local config.json, or a few known hub models):
weights = params x bytes per param; KV cache = 2 x layers x KV heads x head dim x bytes, per token;
LoRA training = frozen weights + adapter (weights, grads, Adam: 16 bytes per param) + activations.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from selfreward import scorers
from selfreward.evaluate import retested
from selfreward.train.stage import objective_name

GIB = 2**30

# Architectures of hub models the experiments name, so the plan needs no network.
KNOWN = {
    "meta-llama/Meta-Llama-3-8B-Instruct": dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=False,
    ),
}


def architecture(cfg) -> dict | None:
    """The model's config.json fields: a local directory's, or the known table's for a hub id; None if unknown."""
    path = Path(cfg.model.path).expanduser()
    if (path / "config.json").is_file():
        arch = json.loads((path / "config.json").read_text())
        return arch.get("text_config", arch)
    return KNOWN.get(cfg.model.path)


def estimate(arch: dict, cfg) -> dict:
    """Parameter count and GiB for weights, the sampling KV cache and LoRA training (one copy, no sharding)."""
    h, n_layers, v = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    heads = arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads", heads)
    head_dim = arch.get("head_dim") or h // heads
    inter = arch["intermediate_size"]
    attn = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2
    mlp = 3 * h * inter
    embed = v * h * (1 if arch.get("tie_word_embeddings", False) else 2)
    params = n_layers * (attn + mlp) + embed
    bytes_per = 4 if cfg.model.dtype == "float32" else 2
    s, r = cfg.sampling, cfg.train.lora.r
    context = cfg.vllm.max_model_len or arch.get("max_position_embeddings") or 4096
    seq_len = min(context, 1024 + s.max_new_tokens)  # a long prompt plus the response budget
    kv_per_token = 2 * n_layers * kv_heads * head_dim * bytes_per
    concurrent = min(256, (cfg.data.prompts_per_iteration or 256) * s.k)
    shapes = {"q_proj": (h, heads * head_dim), "k_proj": (h, kv_heads * head_dim), "v_proj": (h, kv_heads * head_dim),
              "o_proj": (heads * head_dim, h), "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    lora = n_layers * sum(r * (a + b) for name, (a, b) in shapes.items() if name in cfg.train.lora.target_modules)
    # activations kept for backward per token: ~34 x hidden bytes per layer in bf16, or with gradient checkpointing
    # one hidden state per layer plus one layer's worth
    t = cfg.train
    rows = t.micro_batch or t.batch_size
    per_token = (2 * n_layers + 34) * h if t.gradient_checkpointing else 34 * h * n_layers
    activations = rows * seq_len * per_token
    return {
        "params": params,
        "weights": params * bytes_per / GIB,
        "kv": kv_per_token * seq_len * concurrent / GIB,
        "concurrent": concurrent,
        "seq_len": seq_len,
        "lora_params": lora,
        "kv_per_token": kv_per_token,
        "context": context,
        "train": (params * bytes_per + lora * 16 + activations) / GIB,
    }


def work(cfg) -> str:
    """What an iteration generates and judges (time goes with these counts): sampled tokens, and judge calls on
    training candidates, held-out samples (twice with a retest) and preference responses ('?': all of a file)."""
    s, e, d = cfg.sampling, cfg.eval, cfg.data
    prompts = d.prompts_per_iteration or (d.n_train if d.task else None)
    held_out = d.n_eval if d.task else None
    repeat = 2 if retested(cfg) else 1
    calls = {"candidates": prompts and prompts * s.k, "held-out samples" + (", retested" if repeat == 2 else ""):
             held_out and held_out * e.k * repeat, "preference responses": 2 * e.preferences_n if e.preferences else 0}
    counted = sum(v for v in calls.values() if v)
    share = calls["preference responses"] / counted if counted else 0.0
    tokens = prompts * (s.k + 1) * s.max_new_tokens if prompts else "?"
    return (f"  work       per iteration: {tokens} sampled tokens at most; judge calls "
            + " + ".join(f"{'?' if v is None else v} ({name})" for name, v in calls.items())
            + f"; preferences {share:.0%} of those counted")


def plan(cfg) -> str:
    s, j, sel, t, vc = cfg.sampling, cfg.judge, cfg.selection, cfg.train, cfg.vllm
    prompts = cfg.data.prompts_per_iteration or "all"
    gpus = vc.tensor_parallel_size * vc.data_parallel_size if cfg.backend == "vllm" else 1
    lines = [
        "selfreward plan (dry run: nothing loaded)",
        f"  model      {cfg.model.path} (init={cfg.model.init}, dtype={cfg.model.dtype})",
        f"  backend    {cfg.backend} on {cfg.device}"
        + (f" (tensor parallel {vc.tensor_parallel_size} x data parallel {vc.data_parallel_size}, "
           f"sleep mode {'on' if vc.enable_sleep_mode else 'off'}, adapters served with LoRARequest)"
           if cfg.backend == "vllm" else ""),
        f"  data       train={cfg.data.train_prompts or 'built-in ' + str(cfg.data.task)}, "
        f"eval={cfg.data.eval_prompts or 'built-in held-out'}",
        f"  iterations {cfg.iterations}: per iteration {prompts} prompts",
        "  stages     sample -> judge -> select -> train (LoRA) -> evaluate, per iteration; M0 evaluated first",
        f"  sample     K={s.k}, temperature={s.temperature}, top_p={s.top_p}, max_new_tokens={s.max_new_tokens}",
        f"  judge      {scorers.name_of(j)}: scores {list(j.scores)}, "
        + ", ".join(f"{k}={v}" for k, v in OmegaConf.to_container(j, enum_to_str=True).items()
                    if k not in ("scores", "accept", "batch_size")),
        f"  select     {sel.strategy}, top_k={sel.top_k}, threshold={sel.threshold}, min_margin={sel.min_margin}",
        f"  train      {objective_name(t)}, LoRA r={t.lora.r} on {list(t.lora.target_modules)}, lr={t.lr}, "
        f"epochs={t.epochs}, steps={t.steps}, merge={t.merge}, "
        f"processes={t.processes}" + (f" ({t.accelerate_config})" if t.processes > 1 else ""),
        f"  eval       K={cfg.eval.k} sampled + greedy on held-out prompts"
        + (f"; the judge on up to {cfg.eval.preferences_n} preference pairs ({cfg.eval.preferences})"
           if cfg.eval.preferences else "; no preference set (eval.preferences)"),
        work(cfg),
        f"  GPUs       {max(gpus, t.processes)} (generation {gpus}, training {t.processes})",
    ]
    arch = architecture(cfg)
    if arch is None:
        lines.append("  memory     unknown: no local config.json for this model (estimates need its architecture)")
        return "\n".join(lines)
    e = estimate(arch, cfg)
    per_gpu = e["weights"] / vc.tensor_parallel_size
    lines += [
        f"  memory     {e['params'] / 1e9:.2f}B parameters; estimates in GiB:",
        f"    weights        {e['weights']:7.1f}  ({per_gpu:.1f} per GPU at tensor parallel {vc.tensor_parallel_size})",
        f"    KV cache       {e['kv']:7.1f}  ({e['concurrent']} sequences x {e['seq_len']} tokens in flight)",
        f"    LoRA training  {e['train']:7.1f}  (frozen weights + {e['lora_params'] / 1e6:.1f}M adapter params with "
        f"Adam + activations at micro-batch {t.micro_batch or t.batch_size}"
        f"{', checkpointed' if t.gradient_checkpointing else ''}; weights split over {t.processes} process(es) "
        "with FSDP)",
    ]
    if cfg.eval.preferences:
        one = e["kv_per_token"] * e["context"] / GIB
        lines.append(f"    preference judging: {2 * cfg.eval.preferences_n} judge prompts of up to {e['context']} "
                     f"tokens ({one:.2f} GiB of KV cache each at full length; a pair's responses are as long as the "
                     "dataset's, not sampling.max_new_tokens), run as many at once as the cache above holds")
    if cfg.backend == "vllm" and not vc.enable_sleep_mode:
        lines.append("    note: training shares the GPU with the engine; vllm.enable_sleep_mode=true frees it while "
                     "training")
    return "\n".join(lines)
