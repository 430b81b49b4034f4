"""Building blocks of the config schema, shared by `config.py` and the scorer and objective modules that each define
their own settings: a field with a help line, choices as Enums (checked when Hydra composes), the error a check
raises, and the base settings every scorer and every training objective has.

A check beside its dataclass is its `__post_init__`: `config.check` builds the dataclasses from the composed config
(`OmegaConf.to_object`), so every group's checks run before any compute.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def opt(default: Any, help: str) -> Any:
    """A schema field with its one-line help (printed by `python -m selfreward --help`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    if hasattr(default, "__dataclass_fields__"):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class Choice(str, Enum):
    """A closed set of string values: Hydra rejects any other at compose; compares equal to its value."""

    def __str__(self) -> str:
        return self.value


def choices(name: str, *values: str, module: str = __name__) -> type[Choice]:
    """A Choice Enum whose members are named by their values: `Mode = choices("Mode", "gate", "weighted")`."""
    return Choice(name, [(v, v) for v in values], module=module)


class ConfigError(ValueError):
    """A config value that cannot work, with a hint on how to fix it."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class JudgeConfig:
    """What every scorer has. A scorer's own settings sit in its own section (`judge.rubric.*`, ...); the scorer is
    the one whose schema the chosen group (`judge=NAME`) extends, so no setting can pick another."""

    scores: list[int] = opt([1, 2, 3, 4, 5], "the score scale: allowed judge scores; a verifier's pass/fail is its "
                                             "max/min")
    accept: float = opt(3.0, "score at or above which a judgment counts as 'correct' for agreement")
    batch_size: int = opt(512, "judgments per generate call")

    def __post_init__(self):
        require(bool(self.scores) and len(set(self.scores)) == len(self.scores),
                f"judge.scores={list(self.scores)} must be distinct values")
        require(all(0 <= v <= 9 for v in self.scores),
                "judge.scores must be single digits 0-9 (one token each, enforced by the regex)")


StartFrom = choices("StartFrom", "previous", "m0", module=__name__)
TrainData = choices("TrainData", "current", "accumulate", module=__name__)


@dataclass
class LoraConfig:
    r: int = opt(8, "LoRA rank")
    alpha: int = opt(16, "LoRA alpha")
    dropout: float = opt(0.0, "LoRA dropout")
    target_modules: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                    "modules that get adapters (those the model has; none found: all linear layers)")


@dataclass
class TrainConfig:
    """What every training objective has. An objective's own settings extend it (`train/sft.py`'s `Config`)."""

    lora: LoraConfig = opt(LoraConfig(), "adapter shape")
    lr: float = opt(1e-3, "learning rate")
    # 12 measured best on the built-in task (its ~450 four-character winners per iteration; 2, 4, 8 epochs trained
    # less well, docs/builtin-task.md); recipes on real data (RSFT, RFT) use 1-2
    epochs: float = opt(12.0, "passes over the iteration's selected rows; 0: exactly train.steps steps")
    steps: int = opt(0, "the most optimiser steps per iteration (0 = no cap); with epochs=0, the number of steps")
    batch_size: int = opt(64, "sequences per step")
    micro_batch: int = opt(0, "most rows per forward/backward (0 = no limit; DPO: pairs, two sequences each); each "
                              "step runs in micro-batches of similar length, gradients accumulated")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward: far less memory, ~30% slower")
    start_from: StartFrom = opt(StartFrom.previous, "the model each iteration's training starts from")
    data: TrainData = opt(TrainData.current, "this iteration's winners only, or all winners so far")
    merge: bool = opt(True, "merge the adapter into the weights for the next iteration")
    max_grad_norm: float = opt(1.0, "gradient clipping")
    max_bad_steps: int = opt(5, "abort the iteration after this many non-finite losses in a row")
    processes: int = opt(1, "training processes (one per GPU); above 1 the stage is launched with accelerate")
    accelerate_config: str = opt("fsdp.yaml", "accelerate config for processes > 1: a file in conf/accelerate/ or a "
                                              "path")

    def __post_init__(self):
        require(self.epochs >= 0 and self.steps >= 0, "train.epochs and train.steps must be >= 0")
        require(self.epochs > 0 or self.steps > 0, "set train.epochs > 0 or train.steps > 0")
        require(self.batch_size >= 1 and self.processes >= 1, "train.batch_size and train.processes must be >= 1")
