"""`model.dtype=auto`: bf16 where the hardware runs it faster than fp32, decided by measuring once per process.

CPUs differ by two orders of magnitude here: with AVX512-BF16 or AMX a bf16 matmul runs ~5x faster than fp32, with
AVX2 alone ~100x slower (it is emulated). Capability flags say what an instruction set has, not what torch's kernels
make of it on this machine, so the choice times one square matmul in each dtype (well under a second) and keeps bf16
only where it wins clearly. GPUs get bf16 where supported. The choice and both rates are printed once and stored in
run.json (`precision`).
"""

from __future__ import annotations

import functools
import time

import torch

# bf16 must beat fp32 by this factor: the two are far apart wherever bf16 is native or emulated, and a margin keeps
# a noisy timing on a shared machine from flipping the choice
MARGIN = 1.3
CHOSEN: dict[str, dict] = {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype: torch.dtype, device: torch.device, budget_s: float = 1.5, trials: int = 3) -> float:
    """FLOP/s of square matmuls on random data in `dtype`: the best of `trials` timings, the machine's attainable rate.

    The size doubles from 256 until one product takes 50 ms (or 8192), so a dtype the CPU runs slowly (bf16 without
    AVX512-BF16/AMX: ~1 GFLOP/s) costs a fraction of a second, not minutes."""
    n = 256
    while True:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        a @ b
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        t = time.perf_counter() - t
        if t > 0.05 or n >= 8192:
            break
        n *= 2
    reps = max(1, int(budget_s / trials / t))
    out = torch.empty_like(a)
    best = 0.0
    for _ in range(trials):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


@functools.cache
def measured(device_type: str) -> dict:
    """What `auto` picks on this device type, with the rates it measured: {dtype, fp32_gflops, bf16_gflops, why}."""
    device = torch.device(device_type)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        CHOSEN[device_type] = {"dtype": "bfloat16" if bf16 else "float32", "fp32_gflops": None,
                               "bf16_gflops": None, "why": "GPU with bf16" if bf16 else "GPU without bf16"}
        return CHOSEN[device_type]
    fp32 = matmul_rate(torch.float32, device, budget_s=0.3, trials=2)
    bf16 = matmul_rate(torch.bfloat16, device, budget_s=0.3, trials=2)
    fast = bf16 > MARGIN * fp32
    choice = CHOSEN[device_type] = {
        "dtype": "bfloat16" if fast else "float32", "fp32_gflops": round(fp32 / 1e9, 1),
        "bf16_gflops": round(bf16 / 1e9, 1),
        "why": "bf16 matmul faster on this CPU" if fast else "bf16 matmul not faster on this CPU"}
    print(f"[selfreward] model.dtype=auto -> {choice['dtype']} (matmul fp32 {choice['fp32_gflops']} GFLOP/s, "
          f"bf16 {choice['bf16_gflops']} GFLOP/s: {choice['why']})", flush=True)
    return choice


def resolve(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a `model.dtype` setting on `device` (`auto` measures, once per process)."""
    name = measured(device.type)["dtype"] if str(dtype) == "auto" else str(dtype)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def chosen() -> dict:
    """The `auto` choices this process made, by device type (stored in run.json)."""
    return dict(CHOSEN)


def weights_dtype(model) -> torch.dtype:
    """The dtype of a model's frozen weights (its input embedding; LoRA weights may be fp32 beside bf16 ones)."""
    return model.get_input_embeddings().weight.dtype


def dtype_name(model) -> str:
    """`weights_dtype` as the config and vLLM spell it: 'bfloat16', 'float32'."""
    return str(weights_dtype(model)).removeprefix("torch.")


def autocast_dtype(model) -> torch.dtype | None:
    """The autocast dtype for training and scoring `model`: bf16 where its weights are bf16 (the fp32 LoRA weights
    and their optimizer state then run their matmuls in bf16 too), none for fp32 weights."""
    return torch.bfloat16 if weights_dtype(model) == torch.bfloat16 else None
