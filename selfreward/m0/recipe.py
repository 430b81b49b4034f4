"""The built-in model's recipe (`model.builtin.*`): its hash keys the shipped and cached weights."""

from __future__ import annotations

from dataclasses import dataclass

from selfreward.schema import opt


@dataclass
class BuiltinRecipe:
    """How the built-in model (M0 of the default run) is made (its hash keys the cache)."""

    hidden_size: int = opt(128, "model width")
    layers: int = opt(4, "transformer blocks")
    heads: int = opt(4, "attention heads")
    intermediate_size: int = opt(512, "MLP width")
    max_positions: int = opt(96, "context length in tokens")
    steps: int = opt(900, "optimiser steps in phase 1 (synthetic data)")
    self_steps: int = opt(300, "steps in phase 2 (judge data from the model's own samples)")
    batch_size: int = opt(128, "sequences per step")
    lr: float = opt(2e-3, "peak learning rate (cosine decay)")
    gen_fraction: float = opt(0.35, "share of instruction (generation) rows in phase-1 batches")
    verdict_weight: float = opt(5.0, "loss weight of the judge's score token")
    judge_template: str = opt("equation_check.jinja", "judge rubric the model learns (file in prompts/)")
    report_prompts: int = opt(200, "held-out-space prompts for the model's quality report")
    seed: int = opt(0, "training seed")
