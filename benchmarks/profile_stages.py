"""Profile one iteration's stages on the built-in seed (or the bench's 10M config): where the time goes.

    python benchmarks/profile_stages.py [--device cpu|cuda] [--dtype auto|float32|bfloat16] [--model seed|10m]
        [--prompts 128] [--stages sample,judge,train,eval]

Runs sampling, judging, LoRA-SFT (20 steps with the loop's replay mix) and evaluation once to warm up, then again
under torch.profiler, and prints each stage's wall time and its top operators by self time.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from hydra import compose, initialize_config_module
from torch.profiler import ProfilerActivity, profile

from selfreward import scorers
from selfreward.backends import precision
from selfreward.backends.hf import HFBackend, pick_device
from selfreward.config import check, register
from selfreward.evaluate import evaluate
from selfreward.m0.builtin import build_model, build_tokenizer, ensure, replay_rows
from selfreward.m0.recipe import BuiltinRecipe
from selfreward.records import Prompt, Selection
from selfreward.sample import sample
from selfreward.tasks.equation import EquationTask, pool
from selfreward.train.stage import train

register()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="seed", choices=["seed", "10m"])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--rows", type=int, default=12, help="operators listed per stage")
    ap.add_argument("--dtype", default="auto", help="auto (as model.dtype=auto picks) | float32 | bfloat16")
    ap.add_argument("--stages", default="sample,judge,train,eval", help="stages to profile (sampling always runs)")
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = precision.resolve(args.dtype, device)
    tok = build_tokenizer()
    from transformers import AutoModelForCausalLM

    if args.model == "seed":
        model = AutoModelForCausalLM.from_pretrained(ensure(BuiltinRecipe()))
    else:
        model = build_model(BuiltinRecipe(hidden_size=320, layers=6, heads=10, intermediate_size=1280), tok)
    model = model.to(device, dtype).eval()
    backend = HFBackend(model, tok, progress=False)
    prompts = [Prompt.from_row(r) for r in pool(EquationTask(), args.prompts, seed=5, evaluation=False)]
    eval_prompts = [Prompt.from_row(r) for r in pool(EquationTask(), 50, seed=7, evaluation=True)]
    # the default run's config (as `python -m selfreward` composes it), less the KL and the embeddings in evaluation
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=["eval.kl=false", "eval.embeddings=false", "train.epochs=0",
                                           "train.steps=20"])
    check(cfg)
    state = {}
    stages = {
        "sample": lambda: state.update(cands=sample(backend, prompts, cfg.sampling, seed=1)),
        "judge": lambda: scorers.score(backend, state["cands"], cfg.judge, 1),
        # the loop's train stage, with the replay rows the loop hands it (train.replay_fraction of M0's judge rows)
        "train": lambda: train(copy.deepcopy(model), tok, [Selection(c.prompt, c.text, c.prompt_id, c.cand_idx,
                                                                     math.nan, c.correct) for c in state["cands"]],
                               [], cfg, 0, "sft", replay=replay_rows(cfg), progress=False),
        "eval": lambda: evaluate(backend, eval_prompts, cfg),
    }
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    wanted = set(args.stages.split(","))
    for name, fn in stages.items():
        if name not in wanted:
            if name == "sample":
                fn()  # the other stages take its candidates
            continue
        fn()  # warm-up (the judge's constraint index, allocator, first-call caches)
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t
        print(f"\n=== {name}: {wall:.2f} s wall on {device} ({args.model}, {str(dtype).removeprefix('torch.')}, "
              f"{args.prompts} prompts)")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
