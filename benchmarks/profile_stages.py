"""Profile one iteration's stages on the built-in seed (or the bench's 10M config): where the time goes.

    python benchmarks/profile_stages.py [--device cpu|cuda] [--model seed|10m] [--prompts 128]

Runs sampling, judging, LoRA-SFT (20 steps with the loop's replay mix) and evaluation once to warm up, then again
under torch.profiler, and prints each stage's wall time and its top operators by self time.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.profiler import ProfilerActivity, profile

from selfreward.backends.hf import HFBackend, pick_device
from selfreward.config import Config, JudgeConfig, SamplingConfig, SeedRecipe, TrainConfig
from selfreward.evaluate import evaluate
from selfreward.scorers.rubric import judge
from selfreward.sample import sample
from selfreward.tasks.equation import EquationTask, pool
from selfreward.tasks.seed import build_model, build_tokenizer, ensure_seed, replay_examples
from selfreward.train.fit import train_lora


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="seed", choices=["seed", "10m"])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--rows", type=int, default=12, help="operators listed per stage")
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = build_tokenizer()
    from transformers import AutoModelForCausalLM

    if args.model == "seed":
        model = AutoModelForCausalLM.from_pretrained(ensure_seed(SeedRecipe()))
    else:
        model = build_model(SeedRecipe(hidden_size=320, layers=6, heads=10, intermediate_size=1280), tok)
    model = model.to(device, dtype).eval()
    backend = HFBackend(model, tok, progress=False)
    prompts = pool(EquationTask(), args.prompts, seed=5, evaluation=False)
    eval_prompts = pool(EquationTask(), 50, seed=7, evaluation=True)
    replay = replay_examples(tok, SeedRecipe(), n=512, seed=0)
    cfg = Config()
    cfg.eval.kl, cfg.eval.embeddings = False, False
    state = {}
    stages = {
        "sample": lambda: state.update(cands=sample(backend, prompts, SamplingConfig(), seed=1)),
        "judge": lambda: judge(backend, state["cands"], JudgeConfig(), seed=1),
        "train": lambda: train_lora(copy.deepcopy(model), tok, [{"prompt": c["prompt"], "completion": c["text"]}
                                                               for c in state["cands"]], replay,
                                    TrainConfig(steps=20), seed=0, progress=False),
        "eval": lambda: evaluate(backend, eval_prompts, cfg, seed=2),
    }
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, fn in stages.items():
        fn()  # warm-up (the judge's constraint index, allocator, first-call caches)
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t
        print(f"\n=== {name}: {wall:.2f} s wall on {device} ({args.model}, {args.prompts} prompts)")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
