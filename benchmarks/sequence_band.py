"""Where the `sequence` task sits for a model: greedy and sampled accuracy, and the share of prompts whose K samples
hold both a right and a wrong answer ("mixed": where a judge can matter), for a few settings of the task's knobs.

    python benchmarks/sequence_band.py +experiment=gemma3_270m_loop [--prompts 48] [key=value ...]

Prints one row per setting and the CPU; measured figures are in docs/gemma.md."""

from __future__ import annotations

import argparse
import time

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from selfreward.backends.hf import HFBackend
from selfreward.backends.load import load_policy
from selfreward.config import register
from selfreward.data import sequence_task
from selfreward.m0 import resolve
from selfreward.observe.metrics import mean
from selfreward.records import Prompt, by_prompt
from selfreward.sample import sample
from selfreward.scorers.verifier import settings_of
from selfreward.tasks import sequence

SETTINGS = {  # name: data.sequence_* (min_terms, max_terms, min_start, max_start, min_step, max_step)
    "4 terms, start 1-20, step 2-9 (the issue's)": (4, 4, 1, 20, 2, 9),
    "4 terms, start 1-60, step 2-12": (4, 4, 1, 60, 2, 12),
    "3-5 terms, start 1-60, step 2-12": (3, 5, 1, 60, 2, 12),
    "3 terms, start 1-60, step 2-12": (3, 3, 1, 60, 2, 12),
    "5 terms, start 1-60, step 2-12": (5, 5, 1, 60, 2, 12),
}


def cpu() -> str:
    with open("/proc/cpuinfo") as f:
        info = f.read()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    return f"{name} ({', '.join(flags)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--only", default="", help="run the settings whose name contains this")
    args, overrides = ap.parse_known_args()
    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=["data.task=sequence", *overrides])
    policy, tok = load_policy(cfg, resolve(cfg))
    backend = HFBackend(policy, tok, progress=False)
    greedy_cfg = OmegaConf.merge(cfg.sampling, {"k": 1, "temperature": 0.0})
    print(f"CPU: {cpu()}; model {cfg.model.path}; K={cfg.sampling.k} T={cfg.sampling.temperature} "
          f"top-p={cfg.sampling.top_p}; {args.prompts} prompts each (training part)")
    print("| setting | greedy | sampled | mixed | s |\n|---|---|---|---|---|")
    for name, knobs in SETTINGS.items():
        if args.only not in name:
            continue
        keys = ("min_terms", "max_terms", "min_start", "max_start", "min_step", "max_step")
        data = OmegaConf.merge(cfg.data, {f"sequence_{k}": v for k, v in zip(keys, knobs)})
        rows = sequence.pool(sequence_task(data), args.prompts, 0, sequence.TRAIN)
        prompts = [Prompt.from_row(r) for r in rows]
        t = time.time()
        cands = sample(backend, prompts, cfg.sampling, 1, settings_of(cfg.judge))
        greedy = sample(backend, prompts, greedy_cfg, 2, settings_of(cfg.judge))
        groups = by_prompt(cands).values()
        mixed = mean(float(any(c.correct for c in g) and not all(c.correct for c in g)) for g in groups)
        print(f"| {name} | {mean(float(c.correct) for c in greedy):.2f} | {mean(float(c.correct) for c in cands):.2f} "
              f"| {mixed:.2f} | {time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
