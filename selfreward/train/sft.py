"""LoRA-SFT on the iteration's winners (`train=sft`): completion-only NLL, the RSFT / RFT objective.

Batches mix the winners with a `replay_fraction` share of M0's own judge data (the built-in model's, handed over by
the loop), so judging does not erode while generation improves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfreward.backends.hf import completion_logits
from selfreward.prompting import chat
from selfreward.records import Pair, PromptFormat, ReplayRow, Selection
from selfreward.schema import TrainConfig, opt, require


@dataclass
class Config(TrainConfig):
    replay_fraction: float = opt(0.3, "share of each batch drawn from M0's own judge data (the built-in model)")

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.replay_fraction < 1.0, "train.replay_fraction must be in [0, 1)")


@dataclass
class Example:
    """One tokenised training row: loss only on the completion, optionally heavier on its last token."""

    ids: list[int]
    n_prompt: int
    last_weight: float = 1.0

    @property
    def length(self) -> int:
        return len(self.ids)


def encode(tokenizer, prompt: str, completion: str, last_weight: float = 1.0,
           fmt: PromptFormat | None = None) -> Example:
    """Tokenise (prompt, completion) as the sampler formatted it; the completion ends with EOS."""
    p = tokenizer(chat(tokenizer, prompt, fmt), add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return Example(ids=p + c, n_prompt=len(p), last_weight=last_weight)


def encode_row(tokenizer, row: ReplayRow) -> Example:
    """A replay row (prompt, completion, last-token weight) tokenised as `encode` does."""
    return encode(tokenizer, row.prompt, row.completion, last_weight=row.last_weight)


def collate(batch: list[Example], pad_id: int, device) -> dict:
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    weights = torch.zeros((len(batch), width), dtype=torch.float32)
    for i, e in enumerate(batch):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        mask[i, :n] = 1
        weights[i, e.n_prompt : n] = 1.0
        # the score token sits just before EOS; weighting it teaches the compare (issue 8 probes)
        if e.last_weight != 1.0 and n - 2 >= e.n_prompt:
            weights[i, n - 2] = e.last_weight
    # the first position whose logit has a weight: the LM head runs from there on (`completion_logits`)
    start = min(e.n_prompt for e in batch) - 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "weights": weights.to(device),
            "weight": float(weights[:, 1:].sum()), "start": max(0, start)}


def loss(model, batch: dict, denominator: float | None = None, cfg=None) -> torch.Tensor:
    """Weighted token NLL summed over the batch, divided by `denominator` (default: this batch's total weight)."""
    start = batch.get("start", 0)
    logits, targets = completion_logits(model, batch["input_ids"], batch["attention_mask"], start)
    w = batch["weights"][:, start + 1 :]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return (nll * w.reshape(-1)).sum() / (denominator or w.sum().clamp_min(1.0))


def mixture(primary: list[Example], replay: list[Example], batch_size: int, replay_fraction: float, seed: int):
    """A `draw(step)` that fills each batch from `primary` and a `replay_fraction` share from `replay`."""
    rng = random.Random(seed)
    n_replay = round(batch_size * replay_fraction) if replay else 0

    def draw(step: int) -> list[Example]:
        return [rng.choice(primary) for _ in range(batch_size - n_replay)] + [
            rng.choice(replay) for _ in range(n_replay)
        ]

    return draw


def rows_per_step(cfg, replay: list) -> int:
    """How many of the iteration's own rows one step holds (the rest is replay)."""
    return cfg.batch_size - (round(cfg.batch_size * cfg.replay_fraction) if replay else 0)


def prepare(model, tokenizer, selected: list[Selection], pairs: list[Pair], replay: list[Example], cfg, seed: int,
            fmt: PromptFormat | None = None):
    """(draw, examples): batches of the winners (formatted as the sampler formatted their prompts) mixed with
    replay."""
    examples = [encode(tokenizer, s.prompt, s.completion, fmt=fmt) for s in selected]
    if not examples:
        return None, []
    return mixture(examples, replay, cfg.batch_size, cfg.replay_fraction, seed), examples


def report(model, examples: list[Example], pad_id: int, cfg) -> dict:
    """Nothing beyond the loss for SFT."""
    return {}
