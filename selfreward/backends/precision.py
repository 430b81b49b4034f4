"""`model.dtype=auto`: bf16 where the hardware runs it faster than fp32, decided once per run.

CPUs differ by two orders of magnitude here: with AVX512-BF16 or AMX a bf16 matmul runs ~5x faster than fp32, with
AVX2 alone ~100x slower (it is emulated). Capability flags say what an instruction set has, not what torch's kernels
make of it on this machine, so the choice times square matmuls in each dtype (about a second) and keeps bf16 only
where it wins clearly *and* the CPU advertises native bf16. The probe is built so that a busy moment cannot fool it:
the size is fixed on the median of several timings, each rate is the median of several runs, an ambiguous ratio is
measured again, and a contradiction between the timings and the CPU's flags is resolved toward fp32 (the safe
choice: fp32 is never far slower, emulated bf16 is ~100x slower) and reported. GPUs get bf16 where supported.

A run decides once: the loop records the choice in run.json (`precision`) and a resumed run, every training
process and the vLLM engine take the recorded dtype (`pin`), never a new measurement.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# bf16 must beat fp32 by this factor: the two are far apart wherever bf16 is native or emulated, and a margin keeps
# a noisy timing on a shared machine from flipping the choice
MARGIN = 1.3
# a ratio inside (1 / AMBIGUOUS, AMBIGUOUS * MARGIN) is measured again, up to REMEASURE times
AMBIGUOUS = 2.0
REMEASURE = 2
CHOSEN: dict[str, dict] = {}
# tests inject timings here: "fp32=A,bf16=B[;fp32=C,bf16=D...]" in GFLOP/s, one pair per probe round, and flags
PROBE_ENV = "SELFREWARD_DTYPE_PROBE"
FLAGS_ENV = "SELFREWARD_CPU_FLAGS"
# on a CPU in bf16, torch's flash-attention backward costs ~3x the math kernel's forward + backward up to ~200 tokens
# (2-core AMD EPYC, avx512_bf16: 64 x 10 heads x 48 tokens, 51 vs 17 ms; even at 192, slower at 256 and beyond)
MATH_ATTENTION_UP_TO = 192


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(a, b, out, reps: int, device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b, out=out)
    sync(device)
    return time.perf_counter() - t


def matmul_rate(dtype: torch.dtype, device: torch.device, budget_s: float = 0.3, trials: int = 5) -> float:
    """FLOP/s of square matmuls on random data in `dtype`: the median of `trials` timings.

    The size doubles from 256 until the median of three products takes 20 ms (or 4096), so one slow product on a
    busy machine does not stop the sizing early, and a dtype the CPU emulates (~1 GFLOP/s) costs a fraction of a
    second, not minutes."""
    n = 256
    while True:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        out = torch.empty_like(a)
        _time(a, b, out, 1, device)  # warm-up
        t = statistics.median(_time(a, b, out, 1, device) for _ in range(3))
        if t > 0.02 or n >= 4096:
            break
        n *= 2
    reps = max(1, int(budget_s / trials / t))
    return statistics.median(2 * n**3 * reps / _time(a, b, out, reps, device) for _ in range(trials))


def cpu_flags() -> set[str]:
    """What the CPU advertises about bf16: torch's capability level and /proc/cpuinfo's flags (Linux)."""
    if os.environ.get(FLAGS_ENV) is not None:
        return set(os.environ[FLAGS_ENV].split(","))
    flags = {torch.backends.cpu.get_cpu_capability().lower()}
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
        flags |= set(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return flags


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, with the flags that decide its matmul speed: what a reported
    figure is measured on."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return f"{name} ({', '.join(shown) or 'no x86 vector flags'}; torch {torch.backends.cpu.get_cpu_capability()})"


def native_bf16(flags: set[str]) -> bool | None:
    """True where the CPU advertises bf16 arithmetic (AVX512-BF16, AMX), False where it shows flags without it, None
    where it shows nothing to go by (another OS or architecture)."""
    if {"avx512_bf16", "amx_bf16", "avx512_bf16_amx", "amx"} & flags:
        return True
    if {"avx2", "avx512", "avx512f", "default"} & flags:
        return False
    return None


def decide(rounds: list[tuple[float, float]], native: bool | None) -> tuple[str, str]:
    """(dtype, why) from probe rounds of (fp32, bf16) rates, the median over rounds, and the CPU's word on bf16.

    bf16 only where it is faster by MARGIN *and* the CPU does not say it lacks bf16; a measured win on a CPU without
    bf16 (a noisy fp32 timing) and a measured loss on one with it (a noisy bf16 timing) both go to fp32, said so."""
    fp32 = statistics.median(r[0] for r in rounds)
    bf16 = statistics.median(r[1] for r in rounds)
    ratio = bf16 / fp32 if fp32 > 0 else float("inf")
    if ratio > MARGIN:
        if native is False:
            return "float32", (f"bf16 measured {ratio:.1f}x faster, but this CPU advertises no native bf16 "
                               "(no AVX512-BF16 or AMX): the timing is taken for noise, fp32 is the safe choice")
        return "bfloat16", f"bf16 matmul {ratio:.1f}x faster on this CPU"
    if native:
        return "float32", (f"bf16 measured only {ratio:.2f}x fp32 although this CPU advertises native bf16: "
                           "fp32, the safe choice (a busy moment may have slowed the bf16 timing)")
    return "float32", f"bf16 matmul not faster on this CPU ({ratio:.2f}x fp32)"


def _rounds(device: torch.device):
    """Probe rounds of (fp32, bf16) rates: measured, or injected through PROBE_ENV (tests)."""
    injected = os.environ.get(PROBE_ENV)
    if injected:
        for part in injected.split(";"):
            rates = dict(kv.split("=") for kv in part.split(","))
            yield float(rates["fp32"]) * 1e9, float(rates["bf16"]) * 1e9
        return
    while True:
        yield matmul_rate(torch.float32, device), matmul_rate(torch.bfloat16, device)


def probe(device: torch.device) -> tuple[list[tuple[float, float]], bool | None]:
    """Measure until the ratio is clear of the margin (at most 1 + REMEASURE rounds); the CPU's flags beside."""
    rounds = []
    for fp32, bf16 in _rounds(device):
        rounds.append((fp32, bf16))
        ratio = bf16 / fp32 if fp32 > 0 else float("inf")
        if not (1 / AMBIGUOUS < ratio < AMBIGUOUS * MARGIN) or len(rounds) > REMEASURE:
            break
    return rounds, native_bf16(cpu_flags())


@functools.cache
def measured(device_type: str) -> dict:
    """What `auto` picks on this device type, with the rates it measured: {dtype, fp32_gflops, bf16_gflops, why}."""
    if device_type in CHOSEN:  # pinned: a resumed run's recorded choice
        return CHOSEN[device_type]
    device = torch.device(device_type)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        CHOSEN[device_type] = {"dtype": "bfloat16" if bf16 else "float32", "fp32_gflops": None,
                               "bf16_gflops": None, "why": "GPU with bf16" if bf16 else "GPU without bf16"}
        return CHOSEN[device_type]
    rounds, native = probe(device)
    dtype, why = decide(rounds, native)
    choice = CHOSEN[device_type] = {
        "dtype": dtype, "fp32_gflops": round(statistics.median(r[0] for r in rounds) / 1e9, 1),
        "bf16_gflops": round(statistics.median(r[1] for r in rounds) / 1e9, 1), "rounds": len(rounds),
        "native_bf16": native, "why": why}
    print(f"[selfreward] model.dtype=auto -> {dtype} (matmul fp32 {choice['fp32_gflops']} GFLOP/s, "
          f"bf16 {choice['bf16_gflops']} GFLOP/s, {len(rounds)} round(s): {why})", flush=True)
    return choice


def pin(recorded: dict) -> None:
    """Take the choices a run recorded (run.json `precision.auto`) instead of measuring: a run decides once."""
    for device_type, choice in recorded.items():
        CHOSEN[device_type] = {**choice, "why": f"recorded in run.json ({choice.get('why', '')})"}
    measured.cache_clear()


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


def training_attention(device_type: str, amp: torch.dtype | None, length: int):
    """The attention kernels a training forward (and its backward) may use: on a CPU in bf16, for micro-batches of at
    most MATH_ATTENTION_UP_TO tokens, SDPA's math kernel alone (the flash kernel's bf16 backward was 31% of a 10M-config
    LoRA step, and the step 25% faster without it); elsewhere whatever torch picks."""
    if device_type == "cpu" and amp == torch.bfloat16 and length <= MATH_ATTENTION_UP_TO:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()
