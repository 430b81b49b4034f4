"""Supervised fine-tuning: the shared weighted completion-only loop, and the LoRA stage."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from selfreward.prompting import chat


@dataclass
class Example:
    """One tokenised training row: loss only on the completion, optionally heavier on its last token."""

    ids: list[int]
    n_prompt: int
    last_weight: float = 1.0


def encode(tokenizer, prompt: str, completion: str, last_weight: float = 1.0, system: str | None = None,
           few_shot: str | None = None) -> Example:
    """Tokenise (prompt, completion) as the sampler formatted it; the completion ends with EOS."""
    p = tokenizer(chat(tokenizer, prompt, system, few_shot), add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return Example(ids=p + c, n_prompt=len(p), last_weight=last_weight)


def collate(batch: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
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
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "weights": weights.to(device)}


def weighted_loss(model, batch: dict[str, torch.Tensor], denominator: float | None = None) -> torch.Tensor:
    """Weighted token NLL summed over the batch, divided by `denominator` (default: this batch's total weight)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    w = batch["weights"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return (nll * w.reshape(-1)).sum() / (denominator or w.sum().clamp_min(1.0))


# one more forward/backward costs about this many padded tokens' worth of compute (measured on the built-in
# seed on 2 CPU cores: ~4 ms of per-call overhead); it decides where length_buckets cuts
CALL_OVERHEAD_TOKENS = 64


def length_buckets(lengths: list[int], max_rows: int = 0, overhead: int = CALL_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split one step's rows into micro-batches of similar length, as indices into `lengths`.

    Rows are sorted by length and cut where the padding saved outweighs one more forward/backward: the cuts minimise
    sum(rows x longest row + overhead) over the micro-batches (dynamic programming over the sorted order). Each
    micro-batch holds at most `max_rows` rows (0 = no limit). A judge row of ~46 tokens in a batch of ~20-token
    answers no longer pads every row to 46.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j - 1, -1, -1):
            if max_rows and j - i > max_rows:
                break
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it fast, else full precision."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if (amx or avx) else None


class TrainingAborted(RuntimeError):
    """Too many non-finite losses in a row; the last good weights are kept."""


def fit(
    model,
    draw,
    steps: int,
    lr: float,
    pad_id: int,
    *,
    warmup: int = 10,
    schedule: str = "constant",
    max_grad_norm: float = 1.0,
    max_bad_steps: int = 5,
    micro_batch: int = 0,
    accelerator=None,
    desc: str = "train",
    progress: bool = True,
) -> dict:
    """Run `steps` AdamW steps on batches from `draw(step) -> list[Example]`.

    Each step's rows go through in micro-batches of similar length (`length_buckets`, at most `micro_batch` rows
    each when > 0), gradients accumulated, the loss normalised over the whole step. With an `accelerator` (accelerate,
    one process per device) every rank draws the same batch and trains on its own slice of it.
    Non-finite losses skip the step (on every rank); `max_bad_steps` of them in a row raise TrainingAborted.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    rank, world = 0, 1
    if accelerator is not None:
        model, opt = accelerator.prepare(model, opt)
        rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device if accelerator is not None else next(model.parameters()).device

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    amp = autocast_dtype(device)
    model.train()
    losses, skipped, bad_run, tokens = [], 0, 0, 0
    bar = tqdm(range(steps), desc=desc, disable=not progress or rank > 0, leave=False, dynamic_ncols=True)
    for step in bar:
        rows = draw(step)[rank::world]
        batches = [collate([rows[i] for i in chunk], pad_id, device)
                   for chunk in length_buckets([len(e.ids) for e in rows], micro_batch)]
        weight = sum(float(b["weights"][:, 1:].sum()) for b in batches) or 1.0  # the loss is the whole step's mean
        total, finite = 0.0, True
        for batch in batches:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = weighted_loss(model, batch, weight)
            if not torch.isfinite(loss):
                finite = False
                break
            accelerator.backward(loss) if accelerator is not None else loss.backward()
            total += loss.item()
            tokens += int(batch["attention_mask"].sum())
        if accelerator is not None:  # every rank skips together, or DDP's collectives fall out of step
            finite = bool(accelerator.reduce(torch.tensor(float(not finite), device=device), "sum").item() == 0)
        if not finite:
            skipped += 1
            bad_run += 1
            opt.zero_grad(set_to_none=True)
            if bad_run >= max_bad_steps:
                raise TrainingAborted(
                    f"{bad_run} non-finite losses in a row at step {step} of {desc} (train.max_bad_steps); "
                    "nothing of this iteration was saved: the previous iteration's adapter is the last good one"
                )
            continue
        bad_run = 0
        if accelerator is not None:
            accelerator.clip_grad_norm_(params, max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return {
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "steps": len(losses),
        "skipped_steps": skipped,
        "tokens": tokens,
    }


def mixture(primary: list[Example], replay: list[Example], batch_size: int, replay_fraction: float, seed: int):
    """A `draw(step)` that fills each batch from `primary` and a `replay_fraction` share from `replay`."""
    rng = random.Random(seed)
    n_replay = round(batch_size * replay_fraction) if replay else 0

    def draw(step: int) -> list[Example]:
        return [rng.choice(primary) for _ in range(batch_size - n_replay)] + [
            rng.choice(replay) for _ in range(n_replay)
        ]

    return draw


def train_lora(model, tokenizer, rows: list[dict], replay: list[Example], cfg, seed: int, system: str | None = None,
               few_shot: str | None = None, accelerator=None, progress: bool = True):
    """LoRA-SFT of `model` on prompt/completion rows. Returns (peft model, stats)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(seed)  # before the adapter's init, so a resumed run trains the same adapter
    if isinstance(model, PeftModel):
        peft_model = model  # keep training the same adapter (train.merge=false)
    else:
        targets = [t for t in cfg.lora.target_modules if any(n.endswith(t) for n, _ in model.named_modules())]
        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=targets or "all-linear",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    examples = [encode(tokenizer, r["prompt"], r["completion"], system=system, few_shot=few_shot) for r in rows]
    if not examples:
        return peft_model, {"steps": 0, "skipped_steps": 0, "tokens": 0, "loss_first": float("nan"), "loss_last": float("nan")}
    draw = mixture(examples, replay, cfg.batch_size, cfg.replay_fraction, seed)
    stats = fit(
        peft_model,
        draw,
        cfg.steps,
        cfg.lr,
        tokenizer.pad_token_id,
        max_grad_norm=cfg.max_grad_norm,
        max_bad_steps=cfg.max_bad_steps,
        micro_batch=cfg.micro_batch,
        accelerator=accelerator,
        progress=progress,
        desc="train",
    )
    return peft_model, stats
