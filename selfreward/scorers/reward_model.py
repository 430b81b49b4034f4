"""Reward-model scorer (`judge=reward_model`): a Hugging Face sequence-classification model scores each candidate."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from tqdm.auto import tqdm

from selfreward.records import Candidate, Judgment, PromptFormat
from selfreward.schema import JudgeConfig, opt, require

uses_policy = False


@dataclass
class RewardModelSettings:
    path: str | None = opt(None, "a HF sequence-classification reward model: local directory or hub id (required)")
    batch_size: int = opt(32, "rows per forward pass")


@dataclass
class Config(JudgeConfig):
    reward_model: RewardModelSettings = opt(RewardModelSettings(), "the reward model")

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.reward_model.path), "this judge needs a reward model: set judge.reward_model.path=PATH "
                                              "(a HF sequence-classification model)")


def score(backend, candidates: list[Candidate], cfg, seed: int, *, fmt: PromptFormat | None = None,
          desc: str = "reward model") -> list[Judgment]:
    """The reward model's raw logit per candidate, on the policy's device (unbounded: threshold in logit units)."""
    return reward(candidates, cfg.reward_model.path, cfg.reward_model.batch_size,
                  "cpu" if backend is None else str(backend.device), desc=desc)


def judge_prompt(cfg, prompt: str) -> None:
    """The policy writes no judgment: nothing to fit in its context."""
    return None


@lru_cache(maxsize=1)  # the judge runs once per shard: load the reward model once per run
def load_reward_model(path: str, device: str = "cpu"):
    """(model, tokenizer) of a sequence-classification reward model, in eval mode, with a pad token set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # left padding would shift Llama's positions: batched != unbatched
    if model.config.pad_token_id is None:  # the model finds each row's last token by its pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def format_pair(tokenizer, prompt: str, response: str) -> str:
    """The reward model's input: its own chat template over (user, assistant), else prompt and response joined."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return prompt + "\n" + response


@torch.inference_mode()
def reward(candidates: list[Candidate], path: str, batch_size: int = 32, device: str = "cpu", progress: bool = True,
           desc: str = "reward model") -> list[Judgment]:
    """One judgment row per candidate; `score` is the model's raw logit (num_labels=1), unbounded.

    Inputs longer than the model's context are cut at the end (the reward model sees the response's start).
    """
    model, tokenizer = load_reward_model(path, str(device))
    if model.config.num_labels != 1:
        raise ValueError(f"judge.reward_model.path={path!r} has {model.config.num_labels} labels; a reward model has 1")
    texts = [format_pair(tokenizer, c.prompt, c.text) for c in candidates]
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 10**9)
    scores: list[float] = []
    starts = range(0, len(texts), max(1, batch_size))
    for s in tqdm(starts, desc=desc, disable=not progress or not texts, leave=False, dynamic_ncols=True):
        enc = tokenizer(texts[s : s + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=limit,
                        add_special_tokens=not getattr(tokenizer, "chat_template", None))  # the template has its own
        logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits
        scores += logits[:, 0].float().tolist()
    return [Judgment.of(c, s, raw=s, judge_prompt=t) for c, t, s in zip(candidates, texts, scores)]
