"""The training loop every objective shares: AdamW steps over drawn rows, in length-bucketed micro-batches, with the
objective's loss passed in (`sft.loss`, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from peft.helpers import disable_input_dtype_casting
from tqdm.auto import tqdm

from selfreward.backends.precision import autocast_dtype, training_attention

# one more forward/backward costs about this many padded tokens' worth of compute (measured on the built-in
# seed on 2 CPU cores: ~4 ms of per-call overhead); it decides where length_buckets cuts
CALL_OVERHEAD_TOKENS = 64
CPU = torch.device("cpu")


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


def step_plan(rows: list, world: int, micro_batch: int = 0) -> list[list[list]]:
    """Every rank's micro-batches of one step: rank r trains `rows[r::world]`, cut by `length_buckets`.

    Every rank draws the same rows, so each can work out all ranks' plans: the whole step's normaliser and how many
    forward/backward calls every rank must make (under DDP/FSDP each backward is a collective)."""
    plans = []
    for r in range(world):
        mine = rows[r::world]
        plans.append([[mine[i] for i in chunk] for chunk in length_buckets([e.length for e in mine], micro_batch)])
    return plans


class TrainingAborted(RuntimeError):
    """Too many non-finite losses in a row; the last good weights are kept."""


def fit(
    model,
    draw: Callable[[int], list],
    collate: Callable,
    loss: Callable,
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
    grads_hook: Callable[[int, list], None] | None = None,
) -> dict:
    """Run `steps` AdamW steps on the rows `draw(step)` returns (each with a `length`).

    `collate(rows, pad_id, device)` makes a micro-batch, a dict with its share `"weight"` of the step's normaliser;
    `loss(model, batch, denominator)` is the micro-batch's loss summed and divided by the whole step's weight. Each
    step's rows go through in micro-batches of similar length (`length_buckets`, at most `micro_batch` rows
    each when > 0), gradients accumulated, the loss normalised over the whole step. With an `accelerator` (accelerate,
    one process per device) every rank draws the same batch and trains on its own slice of it (`step_plan`); the step's
    gradient is the one-process gradient, whatever the row lengths and `len(rows) % processes`.
    Non-finite losses skip the step (on every rank); `max_bad_steps` of them in a row raise TrainingAborted.
    `grads_hook(step, params)`, if given, sees each step's final gradients before clipping (tests compare them).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    amp = autocast_dtype(model)  # bf16 weights: bf16 matmuls, while LoRA weights and AdamW's state stay fp32
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    rank, world = 0, 1
    if accelerator is not None:
        model, opt = accelerator.prepare(model, opt)
        rank, world = accelerator.process_index, accelerator.num_processes
        # FSDP2 swaps the parameters for sharded ones: clip (and hook) the ones the optimizer now holds
        params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device if accelerator is not None else next(model.parameters()).device

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, skipped, bad_run, tokens = [], 0, 0, 0
    bar = tqdm(range(steps), desc=desc, disable=not progress or rank > 0, leave=False, dynamic_ncols=True)
    for step in bar:
        rows = draw(step)
        # every rank collates every rank's micro-batches (the others' on the CPU, for their weights only)
        plans = [[collate(chunk, pad_id, device if r == rank else CPU) for chunk in plan]
                 for r, plan in enumerate(step_plan(rows, world, micro_batch))]
        weight = sum(b["weight"] for plan in plans for b in plan) or 1.0  # the loss is the whole step's mean
        mine, calls = plans[rank], max(len(plan) for plan in plans)
        spare = collate([min(rows, key=lambda e: e.length)], pad_id, device) if len(mine) < calls else None
        total, finite = 0.0, True
        for i in range(calls):
            batch = mine[i] if i < len(mine) else spare
            # the kernel stays chosen through the backward, where gradient checkpointing recomputes the forward; under
            # autocast PEFT's cast of each adapter's input to fp32 is undone by the matmul: a wasted copy per layer
            with (training_attention(device.type, amp, batch["input_ids"].shape[-1]),
                  disable_input_dtype_casting(model, active=amp is not None)):
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    # over weight / world: DDP and FSDP average the ranks' gradients, so they add up to the step's mean
                    value = loss(model, batch, weight / world)
                if i >= len(mine):  # fewer micro-batches than another rank: join its backward's collectives, adding 0
                    value = value * 0.0
                # no break on a non-finite loss: the other ranks are still running their backwards
                finite = finite and bool(torch.isfinite(value))
                accelerator.backward(value) if accelerator is not None else value.backward()
            total += value.item()
        if accelerator is not None:
            # every rank skips together; each rank's total is over weight / world: the step's loss is their sum / world
            flags = accelerator.reduce(torch.tensor([float(not finite), total], device=device), "sum")
            finite, total = bool(flags[0].item() == 0), flags[1].item() / world
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
        tokens += sum(int(b["attention_mask"].sum()) for plan in plans for b in plan)
        if grads_hook is not None:
            grads_hook(step, params)
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
