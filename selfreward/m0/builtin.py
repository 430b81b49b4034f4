"""The built-in model (`model.path=builtin`), M0 of the default run: a character tokenizer and a tiny Llama
trained from scratch on the built-in equation task.

As in the Self-Rewarding LMs recipe, M0 learns two kinds of data: instruction data (equation -> answer) and
evaluation data (rubric prompt about an equation and a candidate -> the worked check and a score). Phase 2 adds
judge data built from the model's own samples, labelled by the verifier while it is built (the loop itself never sees
ground truth).

Rebuild the shipped weights:  selfreward m0 --builtin    (python -m selfreward.m0 --builtin; writes
selfreward/m0/builtin_weights/<recipe hash>; recipe fields as overrides: model.builtin.steps=200)
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfreward.backends.hf import HFBackend
from selfreward.observe.metrics import auc, auc_within
from selfreward.prompting import chat, render_judge, template_path
from selfreward.records import Candidate, ReplayRow
from selfreward.rundir.artifacts import atomic, cache_dir
from selfreward.scorers import rubric
from selfreward.scorers.verifier import is_correct
from selfreward.tasks.equation import EquationTask, check_text, held_out, near_miss
from selfreward.train.fit import fit
from selfreward.train.sft import collate, encode, encode_row, loss

FORMAT_VERSION = 1  # bump when the data format or training code changes what a recipe produces
PACKAGED = Path(__file__).resolve().parent / "builtin_weights"
CHARS = "0123456789abcdefghijklmnopqrstuvwxyz+-*/=<>?!.,;:|()[]{}'\"#%&_ "
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]


CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer():
    """A character-level tokenizer made with `tokenizers`, wrapped for transformers, with a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        chat_template=CHAT_TEMPLATE, padding_side="left", model_max_length=4096,
    )


def build_model(recipe, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.max_positions, tie_word_embeddings=True, rope_theta=10000.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(recipe.seed)
    return LlamaForCausalLM(config)


def recipe_hash(recipe) -> str:
    blob = json.dumps({"recipe": _plain(recipe), "task": asdict(EquationTask()), "format": FORMAT_VERSION,
                       "template": template_path(recipe.judge_template).read_text(encoding="utf-8")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure(recipe, progress: bool = True) -> Path:
    """The built-in model's directory for this recipe: shipped in the package, cached, or trained now (then
    cached)."""
    key = recipe_hash(recipe)
    for root in (PACKAGED, cache_dir("builtin")):
        if (root / key / "config.json").is_file():
            return root / key
    out = cache_dir("builtin") / key
    print(f"[selfreward] building the built-in model {key} (first use of this recipe; cached at {out})", flush=True)
    build(recipe, out, progress=progress)
    return out


def _plain(recipe) -> dict:
    return OmegaConf.to_container(recipe, resolve=True) if OmegaConf.is_config(recipe) else asdict(recipe)


def _train_prompt(task: EquationTask, rng: random.Random, evaluation: bool = False) -> dict:
    while True:
        row = task.problem(rng)
        if held_out(row["prompt"]) == evaluation:
            return row


def judge_row(template: str, prompt: str, response: str, weight: float) -> ReplayRow:
    """The rubric prompt about `response` and the verdict the model learns: the worked check, then the score."""
    check, score = check_text(prompt, response)
    return ReplayRow(render_judge(template, prompt, response), f"{check}:{score}", weight)


def judge_example(tokenizer, template: str, prompt: str, response: str, weight: float):
    return encode_row(tokenizer, judge_row(template, prompt, response, weight))


def build(recipe, out: Path, progress: bool = True) -> dict:
    """Train the built-in model and save it as an HF model directory (atomically: temp dir, then rename)."""
    t0 = time.time()
    torch.manual_seed(recipe.seed)
    task, rng = EquationTask(), random.Random(recipe.seed)
    tokenizer = build_tokenizer()
    model = build_model(recipe, tokenizer)
    tpl, w = recipe.judge_template, recipe.verdict_weight

    def instruction():
        row = _train_prompt(task, rng)
        return encode(tokenizer, row["prompt"], task.response(row["answer"]))

    def synthetic_judgment():
        return synthetic_judgment_example(tokenizer, recipe, task, rng)

    def phase1(step):
        n_gen = round(recipe.batch_size * recipe.gen_fraction)
        return [instruction() for _ in range(n_gen)] + [synthetic_judgment() for _ in range(recipe.batch_size - n_gen)]

    stats = fit(model, phase1, collate, loss, recipe.steps, recipe.lr, tokenizer.pad_token_id, warmup=50,
                schedule="cosine", desc="m0 1/2", progress=progress)

    # phase 2: the model's own samples, labelled by the verifier, as contrastive judge data
    rights, wrongs = _own_samples(model, tokenizer, task, rng, n_prompts=384, k=8, progress=progress)

    def phase2(step):
        n_gen = round(recipe.batch_size * recipe.gen_fraction)
        rows = [instruction() for _ in range(n_gen)]
        for i in range(recipe.batch_size - n_gen):
            pool = rights if (i % 2 == 0 and rights) or not wrongs else wrongs
            if i % 4 == 3 or not pool:
                rows.append(synthetic_judgment())
            else:
                p, r = rng.choice(pool)
                rows.append(judge_example(tokenizer, tpl, p, r, w))
        return rows

    if recipe.self_steps:
        fit(model, phase2, collate, loss, recipe.self_steps, recipe.lr / 3, tokenizer.pad_token_id, warmup=20,
            schedule="cosine", desc="m0 2/2", progress=progress)
    report = {"recipe_hash": recipe_hash(recipe), "recipe": _plain(recipe), "train_s": round(time.time() - t0, 1),
              "loss_first": stats["loss_first"], "phase2_rights": len(rights), "phase2_wrongs": len(wrongs),
              "params": sum(p.numel() for p in model.parameters())}
    report.update(measure(model, tokenizer, recipe, progress=progress))
    _save(model, tokenizer, report, out)
    return report


def _own_samples(model, tokenizer, task, rng, n_prompts: int, k: int, progress: bool):
    rows = [_train_prompt(task, rng) for _ in range(n_prompts)]
    backend = HFBackend(model, tokenizer, progress=progress)
    outs = backend.generate([chat(tokenizer, r["prompt"]) for r in rows], k, 1.0, 1.0, 0, 8,
                            seed=rng.randrange(2**31), desc="m0 samples")
    rights, wrongs = [], []
    for r, comps in zip(rows, outs):
        for t in (c.text for c in comps):
            (rights if is_correct(t, r["answer"]) else wrongs).append((r["prompt"], t))
    return rights, wrongs


def measure(model, tokenizer, recipe, progress: bool = True, k: int = 8) -> dict:
    """Seed quality on held-out-space prompts (never trained on): sampled/greedy accuracy, judge AUCs."""
    rng = random.Random(recipe.seed + 99)
    task = EquationTask()
    rows = [_train_prompt(task, rng, evaluation=True) for _ in range(recipe.report_prompts)]
    backend = HFBackend(model, tokenizer, progress=progress)
    inputs = [chat(tokenizer, r["prompt"]) for r in rows]
    sampled = backend.generate(inputs, k, 1.0, 1.0, 0, 8, seed=1, desc="m0 eval")
    greedy = backend.generate(inputs, 1, 0.0, 1.0, 0, 8, seed=1, desc="m0 greedy")
    cands = [Candidate(str(i), r["prompt"], j, c.text, c.seed, r["answer"], None, c.logprob, c.entropy,
                       is_correct(c.text, r["answer"]))
             for i, (r, comps) in enumerate(zip(rows, sampled)) for j, c in enumerate(comps)]
    jcfg = rubric.Config(rubric=rubric.RubricSettings(template=recipe.judge_template))
    scores = [j.score for j in rubric.score(backend, cands, jcfg, seed=2, desc="m0 judge")]
    labels = [bool(c.correct) for c in cands]
    return {
        "sampled_accuracy": sum(labels) / len(labels),
        "greedy_accuracy": sum(bool(is_correct(g[0].text, r["answer"])) for g, r in zip(greedy, rows)) / len(rows),
        "judge_auc": auc(scores, labels),
        "judge_auc_within": auc_within([c.prompt_id for c in cands], scores, labels),
    }


def _save(model, tokenizer, report: dict, out: Path) -> None:
    with atomic(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "seed_report.json").write_text(json.dumps(report, indent=2) + "\n")


def replay_rows(cfg) -> list[ReplayRow]:
    """The built-in model's own judge (evaluation) data, replayed during training so judging does not erode
    (`train.replay_fraction`; none for other models). Judge rows only: they teach generation no answers. The loop
    hands them to the training stage."""
    if cfg.model.path != "builtin" or getattr(cfg.train, "replay_fraction", 0) <= 0:
        return []
    task, rng = EquationTask(), random.Random(cfg.seed + 17)
    return [synthetic_judgment(cfg.model.builtin, task, rng) for _ in range(2048)]


def synthetic_judgment(recipe, task: EquationTask, rng: random.Random) -> ReplayRow:
    """A judge row on a training-space problem: the right answer or a near-miss, half and half."""
    row = _train_prompt(task, rng)
    x = int(row["answer"])
    y = x if rng.random() < 0.5 else near_miss(x, rng)
    return judge_row(recipe.judge_template, row["prompt"], task.response(y), recipe.verdict_weight)


def synthetic_judgment_example(tokenizer, recipe, task: EquationTask, rng: random.Random):
    return encode_row(tokenizer, synthetic_judgment(recipe, task, rng))
