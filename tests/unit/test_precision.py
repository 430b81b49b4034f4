"""`model.dtype`: what `auto` picks, and every stage of the loop in bf16 on the built-in seed (bf16 is asked for
explicitly, so these run on every CPU: where bf16 is emulated they are slower, not different)."""

import copy
import math
import re

import pytest
import torch

from selfreward import scorers
from selfreward.backends import precision
from selfreward.backends.hf import HFBackend, load
from selfreward.m0.builtin import ensure
from selfreward.m0.recipe import BuiltinRecipe
from selfreward.prompting import chat
from selfreward.records import Selection
from selfreward.scorers import rubric
from selfreward.scorers.rubric import schema_regex
from selfreward.train.sft import collate, encode, loss
from selfreward.train.stage import train
from tests.conftest import cand, compose_config

PROMPTS = [f"{a}x+{b}={a * x + b}" for a, b, x in [(2, 1, 2), (3, 4, 5), (7, 20, 10), (5, 5, 1), (4, 0, 9),
                                                   (13, 77, 15), (6, 3, 7), (9, 9, 3), (2, 50, 25), (8, 1, 4),
                                                   (3, 3, 3), (11, 2, 6), (5, 40, 12), (4, 4, 4), (10, 7, 8),
                                                   (12, 12, 2)]]


@pytest.fixture(scope="module")
def models():
    path = str(ensure(BuiltinRecipe(), progress=False))
    return {dt: load(path, dtype=dt) for dt in ("float32", "bfloat16")}


def test_auto_picks_by_the_measured_rates():
    cpu = torch.device("cpu")
    choice = precision.measured("cpu")
    assert choice["fp32_gflops"] > 0 and choice["bf16_gflops"] > 0
    # the choice is decide()'s on the medians it measured and the CPU's flags
    rates = [(choice["fp32_gflops"], choice["bf16_gflops"])]
    assert choice["dtype"] == precision.decide(rates, choice["native_bf16"])[0]
    assert precision.resolve("auto", cpu) == {"bfloat16": torch.bfloat16, "float32": torch.float32}[choice["dtype"]]
    assert precision.chosen()["cpu"] == choice  # what run.json records
    # an explicit setting is taken as it is, whatever the CPU
    assert precision.resolve("float32", cpu) == torch.float32 and precision.resolve("bfloat16", cpu) == torch.bfloat16


@pytest.mark.parametrize("rounds, native, expected", [
    ([(200, 850)], True, "bfloat16"),  # AVX512-BF16, quiet machine
    ([(330, 1700)], None, "bfloat16"),  # no flags to go by (another OS): the timing decides
    ([(170, 1)], False, "float32"),  # AVX2: emulated bf16
    ([(1.1, 112.4)], False, "float32"),  # a busy moment slowed fp32 100x on a CPU without bf16: not fooled
    ([(1.1, 112.4)], True, "bfloat16"),  # the same timings on a CPU that has it: bf16 is right there anyway
    ([(157.8, 204.1)], True, "float32"),  # ambiguous (under the margin) on a bf16 CPU: fp32, the safe choice
    ([(160, 362), (158, 204), (159, 350)], True, "bfloat16"),  # re-measured: the median of the rounds decides
    ([(160, 140), (150, 1), (170, 2)], False, "float32"),
])
def test_decide_on_injected_timings(rounds, native, expected):
    dtype, why = precision.decide([(a * 1e9, b * 1e9) for a, b in rounds], native)
    assert dtype == expected, why


def test_a_contradiction_with_the_flags_is_reported():
    _, why = precision.decide([(1.0, 100.0)], False)
    assert "no native bf16" in why and "safe" in why
    _, why = precision.decide([(200.0, 100.0)], True)
    assert "advertises native bf16" in why


def test_ambiguous_ratio_is_measured_again(monkeypatch):
    monkeypatch.setenv(precision.PROBE_ENV, "fp32=100,bf16=120;fp32=100,bf16=140;fp32=100,bf16=110;fp32=1,bf16=1")
    rounds, _ = precision.probe(torch.device("cpu"))
    assert len(rounds) == 1 + precision.REMEASURE  # at most this many, however ambiguous
    monkeypatch.setenv(precision.PROBE_ENV, "fp32=100,bf16=1;fp32=1,bf16=1")
    assert len(precision.probe(torch.device("cpu"))[0]) == 1  # clear at once: no second round


def test_flags_say_what_the_cpu_advertises(monkeypatch):
    assert precision.native_bf16({"avx2", "fma"}) is False
    assert precision.native_bf16({"avx512f", "avx512_bf16"}) is True
    assert precision.native_bf16({"amx_bf16", "avx2"}) is True
    assert precision.native_bf16(set()) is None
    monkeypatch.setenv(precision.FLAGS_ENV, "avx2")
    assert precision.cpu_flags() == {"avx2"}


def test_pinned_choice_is_taken_without_measuring(monkeypatch):
    saved = dict(precision.CHOSEN)
    try:
        monkeypatch.setenv(precision.PROBE_ENV, "fp32=1,bf16=1000")  # would pick bf16 if measured
        monkeypatch.setenv(precision.FLAGS_ENV, "avx512_bf16")
        precision.pin({"cpu": {"dtype": "float32", "fp32_gflops": 150.0, "bf16_gflops": 1.0, "why": "x"}})
        assert precision.resolve("auto", torch.device("cpu")) == torch.float32
        assert "recorded in run.json" in precision.chosen()["cpu"]["why"]
    finally:
        precision.CHOSEN.clear()
        precision.CHOSEN.update(saved)
        precision.measured.cache_clear()


def test_bf16_weights_train_with_fp32_adapters_and_autocast(models):
    model, tok = models["bfloat16"]
    assert precision.autocast_dtype(model) == torch.bfloat16
    assert precision.autocast_dtype(models["float32"][0]) is None
    cfg = compose_config(["+experiment=tiny", "train.epochs=0", "train.steps=6", "train.replay_fraction=0.0"])
    rows = [Selection(p, f"x={p.split('=')[0][0]}", prompt_id=str(i), cand_idx=0, score=5.0, correct=None)
            for i, p in enumerate(PROMPTS)]
    base = copy.deepcopy(model)
    trained, stats = train(base, tok, rows, [], cfg, 0, "sft", progress=False)
    assert stats["steps"] == 6 and math.isfinite(stats["loss_last"])
    lora = {n: p for n, p in trained.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # master weights and AdamW state in fp32
    assert trained.get_input_embeddings().weight.dtype == torch.bfloat16  # the frozen weights stay bf16
    # B starts at zero: nonzero means it trained
    assert any(float(p.detach().abs().sum()) > 0 for n, p in lora.items() if "lora_B" in n)


def test_training_attention_kernel_choice():
    math_kernel = precision.training_attention("cpu", torch.bfloat16, precision.MATH_ATTENTION_UP_TO)
    assert math_kernel.__class__.__name__ != "nullcontext"
    for other in [("cpu", torch.bfloat16, precision.MATH_ATTENTION_UP_TO + 1), ("cpu", None, 32),
                  ("cuda", torch.bfloat16, 32)]:
        assert precision.training_attention(*other).__class__.__name__ == "nullcontext", other


@pytest.mark.parametrize("checkpointing", [False, True])
def test_bf16_training_on_cpu_attends_with_the_math_kernel(models, checkpointing):
    """The flash kernel's bf16 backward is the slow one on a CPU: a bf16 LoRA step runs attention through the math
    kernel, also where gradient checkpointing recomputes the forward inside the backward."""
    model, tok = models["bfloat16"]
    cfg = compose_config(["+experiment=tiny", "train.epochs=0", "train.steps=2", "train.replay_fraction=0.0",
                          f"train.gradient_checkpointing={checkpointing}"])
    rows = [Selection(p, f"x={p.split('=')[0][0]}", prompt_id=str(i), cand_idx=0, score=5.0, correct=None)
            for i, p in enumerate(PROMPTS)]
    with torch.profiler.profile() as prof:
        _, stats = train(copy.deepcopy(model), tok, rows, [], cfg, 0, "sft", progress=False)
    ops = {e.key for e in prof.key_averages()}
    assert math.isfinite(stats["loss_last"])
    assert any("attention_math" in op for op in ops), sorted(op for op in ops if "attention" in op)
    assert not any("flash_attention" in op for op in ops), sorted(op for op in ops if "attention" in op)


def test_math_and_flash_attention_give_the_same_gradients_in_bf16(models):
    model, tok = models["bfloat16"]
    model = copy.deepcopy(model).train()
    model.requires_grad_(True)
    batch = collate([encode(tok, p, f"x={p.split('=')[0][0]}") for p in PROMPTS[:8]], tok.pad_token_id, "cpu")
    grads = []
    for kernel in (torch.nn.attention.SDPBackend.FLASH_ATTENTION, torch.nn.attention.SDPBackend.MATH):
        model.zero_grad()
        with torch.nn.attention.sdpa_kernel([kernel]):
            loss(model, batch, 1.0).backward()
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None]))
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.99 and (grads[0].norm() / grads[1].norm() - 1).abs() < 0.05


def test_bf16_samples_judges_and_scores_like_fp32(models):
    """Greedy answers agree with fp32's on most prompts (bf16 rounds logits, so a near tie may flip), constrained
    judgments parse, score-only judging and teacher-forced log-probs stay close."""
    outs = {}
    for dt, (model, tok) in models.items():
        backend = HFBackend(model, tok, progress=False)
        prompts = [chat(tok, p) for p in PROMPTS]
        greedy = [c[0].text for c in backend.generate(prompts, 1, 0.0, 1.0, 0, 8, seed=1)]
        cfg = rubric.Config(rubric=rubric.RubricSettings(max_new_tokens=40))
        cands = [cand(str(i), 0, t, prompt=p) for i, (p, t) in enumerate(zip(PROMPTS, greedy))]
        judged = scorers.score(backend, cands, cfg, seed=0)
        rx = schema_regex(cfg.rubric.reasoning_regex, cfg.rubric.score_prefix, cfg.scores)
        assert all(re.fullmatch(rx, j.raw) for j in judged), dt
        checks = [chat(tok, f"check {p} {t}") for p, t in zip(PROMPTS, greedy)]
        fast = backend.score_next(checks, [1, 2, 3, 4, 5], 0.0, 0)
        logp = backend.logprob(prompts, greedy)
        outs[dt] = greedy, [j.score for j in judged], fast, logp
    (g32, s32, f32, l32), (g16, s16, f16, l16) = outs["float32"], outs["bfloat16"]
    assert sum(a == b for a, b in zip(g32, g16)) >= 0.75 * len(PROMPTS)
    assert sum(abs(a - b) < 0.25 for a, b in zip(s32, s16)) >= 0.75 * len(PROMPTS)  # expected scores
    assert sum(a.sampled == b.sampled for a, b in zip(f32, f16)) >= 0.75 * len(PROMPTS)
    same = [i for i, (a, b) in enumerate(zip(g32, g16)) if a == b]
    assert all(abs(l32[i][0] - l16[i][0]) < 0.1 for i in same)  # mean log-prob per token, nats
