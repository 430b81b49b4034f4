"""LoRA-DPO on the iteration's pairs (`train=dpo`): the Self-Rewarding LMs objective (Yuan et al. 2024), best vs worst
of K by the model's own judge.

The reference is the policy at the start of the iteration: its log-probs are computed once per pair, before the first
step, with the same weights (no second copy in memory). Losses as TRL's `DPOTrainer` computes them (`sigmoid`, `ipo`
with length-normalised log-ratios, `hinge`); `nll_weight` adds the NLL of the chosen response, as Iterative RPO
(Pang et al. 2024) and TRL's `loss_type=["sigmoid", "sft"]` do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfreward.backends.hf import completion_logits
from selfreward.backends.precision import autocast_dtype
from selfreward.records import Pair, PromptFormat, Selection
from selfreward.schema import TrainConfig, choices, opt, require
from selfreward.train.sft import Example, encode

Loss = choices("Loss", "sigmoid", "ipo", "hinge", module=__name__)


@dataclass
class Config(TrainConfig):
    # measured on the built-in task (docs/training.md, "The DPO table"): plain DPO falls below M0 at every epochs
    # (1, 2, 4, 12) and beta (0.1, 0.5) tried, on the judge's pairs and on oracle pairs alike; with the chosen NLL it
    # ends above M0 on both, best at 12 epochs
    lr: float = opt(2e-4, "learning rate")
    epochs: float = opt(12.0, "passes over the iteration's pairs (measured: 12 beats 2 with the NLL term)")
    beta: float = opt(0.1, "strength of the pull to the reference (the paper's 0.1; 0.5 measured no better)")
    loss: Loss = opt(Loss.sigmoid, "sigmoid (DPO), ipo, or hinge (SLiC)")
    nll_weight: float = opt(1.0, "weight of the chosen response's NLL added to the loss (Iterative RPO, the default: "
                                 "plain DPO, 0, unlearns the chosen answers here)")

    def __post_init__(self):
        super().__post_init__()
        require(self.beta > 0, "train.beta must be > 0")
        require(self.nll_weight >= 0, "train.nll_weight must be >= 0")


@dataclass
class PairExample:
    """One tokenised preference pair and the reference policy's log-probs of its two completions."""

    chosen: Example
    rejected: Example
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0

    @property
    def length(self) -> int:
        return max(self.chosen.length, self.rejected.length)


def collate(rows: list[PairExample], pad_id: int, device) -> dict:
    """Chosen rows then rejected rows, right-padded, with the completion tokens marked (TRL's layout)."""
    seqs = [r.chosen for r in rows] + [r.rejected for r in rows]
    width = max(e.length for e in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, e in enumerate(seqs):
        ids[i, : e.length] = torch.tensor(e.ids)
        mask[i, : e.length] = 1
        completion[i, e.n_prompt : e.length] = 1
    ref = torch.tensor([[r.ref_chosen, r.ref_rejected] for r in rows], dtype=torch.float32)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "completion_mask": completion.to(device),
            "ref_chosen": ref[:, 0].to(device), "ref_rejected": ref[:, 1].to(device), "weight": float(len(rows)),
            "start": max(0, min(e.n_prompt for e in seqs) - 1)}


def sequence_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each row's completion tokens, their count)."""
    start = batch.get("start", 0)
    logits, targets = completion_logits(model, batch["input_ids"], batch["attention_mask"], start)
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    mask = batch["completion_mask"][:, start + 1 :].float()
    return (token_logps * mask).sum(1), mask.sum(1)


def pair_losses(logps, counts, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """Per-pair losses and the reward figures (TRL's names) from the policy's and the reference's log-probs."""
    chosen, rejected = logps.chunk(2)
    n_chosen, n_rejected = counts.chunk(2)
    chosen_ratio, rejected_ratio = chosen - batch["ref_chosen"], rejected - batch["ref_rejected"]
    delta = chosen_ratio - rejected_ratio
    if cfg.loss == Loss.ipo:  # length-normalised log-ratios, as TRL (and the IPO authors) compute them
        avg = chosen_ratio / n_chosen.clamp(min=1.0) - rejected_ratio / n_rejected.clamp(min=1.0)
        losses = (avg - 1 / (2 * cfg.beta)) ** 2
    elif cfg.loss == Loss.hinge:
        losses = torch.relu(1 - cfg.beta * delta)
    else:
        losses = -F.logsigmoid(cfg.beta * delta)
    if cfg.nll_weight:  # the chosen tokens' mean NLL over the batch, counted once per pair
        losses = losses + cfg.nll_weight * (-chosen.sum() / n_chosen.sum().clamp(min=1.0))
    figures = {"rewards_chosen": cfg.beta * chosen_ratio.detach(),
               "rewards_rejected": cfg.beta * rejected_ratio.detach(),
               "logps_chosen": chosen.detach(), "logps_rejected": rejected.detach()}
    return losses, figures


def loss(model, batch: dict, denominator: float | None = None, cfg=None) -> torch.Tensor:
    """The micro-batch's summed pair losses divided by the whole step's number of pairs (`denominator`)."""
    logps, counts = sequence_logps(model, batch)
    losses, _ = pair_losses(logps, counts, batch, cfg)
    return losses.sum() / (denominator or batch["weight"])


@torch.no_grad()
def _logps(model, examples: list[PairExample], pad_id: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's completion log-probs for every pair (all chosen, then all rejected) and their token counts, in
    eval mode, `rows` pairs at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    amp = autocast_dtype(model)  # the precision training runs in, so a log-ratio starts at zero
    parts = []
    for start in range(0, len(examples), rows):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logps, counts = sequence_logps(model, collate(examples[start : start + rows], pad_id, device))
        parts.append((logps.float().cpu().chunk(2), counts.cpu().chunk(2)))
    model.train(was_training)
    logps = torch.cat([c for (c, _), _ in parts] + [r for (_, r), _ in parts])
    counts = torch.cat([c for _, (c, _) in parts] + [r for _, (_, r) in parts])
    return logps, counts


def prepare(model, tokenizer, selected: list[Selection], pairs: list[Pair], replay: list, cfg, seed: int,
            fmt: PromptFormat | None = None):
    """(draw, examples): the iteration's pairs, formatted as the sampler formatted their prompts, with the reference
    log-probs computed now, once (the model as it starts the iteration)."""
    examples = [PairExample(encode(tokenizer, p.prompt, p.chosen, fmt=fmt),
                            encode(tokenizer, p.prompt, p.rejected, fmt=fmt)) for p in pairs]
    if not examples:
        return None, []
    ref, _ = _logps(model, examples, tokenizer.pad_token_id, cfg.micro_batch or cfg.batch_size)
    for e, c, r in zip(examples, *(half.tolist() for half in ref.chunk(2))):
        e.ref_chosen, e.ref_rejected = c, r
    rng = random.Random(seed)

    def draw(step: int) -> list[PairExample]:
        return [rng.choice(examples) for _ in range(cfg.batch_size)]

    return draw, examples


def rows_per_step(cfg, replay: list) -> int:
    return cfg.batch_size


def report(model, examples: list[PairExample], pad_id: int, cfg) -> dict:
    """The trained policy on the iteration's pairs: TRL's reward figures, and how far the chosen responses' log-prob
    moved over the iteration, summed and per token (DPO can lower it too: `alerts.chosen_logp_change`, per token)."""
    if not examples:
        return {}
    logps, counts = _logps(model, examples, pad_id, cfg.micro_batch or cfg.batch_size)
    batch = {"ref_chosen": torch.tensor([e.ref_chosen for e in examples]),
             "ref_rejected": torch.tensor([e.ref_rejected for e in examples])}
    _, f = pair_losses(logps, counts, batch, cfg)
    chosen, rejected = logps.chunk(2)
    n_chosen = counts.chunk(2)[0].float().clamp_min(1)
    margin = f["rewards_chosen"] - f["rewards_rejected"]
    return {"train/rewards_chosen": float(f["rewards_chosen"].mean()),
            "train/rewards_rejected": float(f["rewards_rejected"].mean()),
            "train/rewards_margin": float(margin.mean()), "train/rewards_accuracy": float((margin > 0).float().mean()),
            "train/logps_chosen": float(chosen.mean()), "train/logps_rejected": float(rejected.mean()),
            "train/logps_chosen_change": float(f["rewards_chosen"].mean() / cfg.beta),
            # per token: a length-blind sum hides a short answer's fall (-0.86 nats on 5 tokens: probability x0.42)
            "train/logps_chosen_change_per_token": float((chosen - batch["ref_chosen"]).div(n_chosen).mean())}
