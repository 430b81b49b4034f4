"""The transformers backend: model loading, batched sampling, Outlines-constrained judging, log-probs."""

from __future__ import annotations

import functools
import inspect
import math
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteriaList
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from selfreward.backends import JudgeOutput, precision
from selfreward.backends.attention import cache_dtype, decodes
from selfreward.backends.processors import (
    BatchedRegexProcessor,
    NucleusSampler,
    ScoreReader,
    StopOnStrings,
    TokenStats,
    cut_lengths,
)
from selfreward.prompting import cut
from selfreward.records import Completion


@functools.cache
def cache_kwarg() -> str:
    """generate's name for a ready KV cache: transformers renamed `past_key_values` to `cache` after 5.19."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load(path: str, *, init: str = "pretrained", dtype: str = "auto", device: str = "auto",
         gguf_file: str | None = None, trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer from a local directory or hub id (safetensors only)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    torch_dtype = precision.resolve(dtype, dev)  # auto: bf16 where it is measured faster (GPUs, AMX/AVX512-BF16)
    kw = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    if not (Path(path).is_dir() or "/" in path):
        raise FileNotFoundError(f"model.path={path!r} is neither a local directory nor a hub id (owner/name)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except OSError as e:  # a hub id with no network and nothing cached, or a directory without a tokenizer
        raise FileNotFoundError(
            f"model.path={path!r} could not be loaded ({str(e).splitlines()[0]}); give a local model directory, or "
            "fetch the hub model first (huggingface-cli download) where the Hub is reachable"
        ) from e
    if init == "random":
        config = AutoConfig.from_pretrained(path, **kw)
        torch.manual_seed(0)
        with dev:  # made where it runs: a GPU initialises an 8B model in seconds, a CPU in minutes
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=not gguf_file,
                                                     **kw, **gguf_dequantized(gguf_file))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(dev).eval(), tokenizer


def gguf_dequantized(gguf_file: str | None) -> dict:
    """A GGUF's weights unpacked into plain linear layers, as LoRA trains on them. Said explicitly, transformers
    (>= 5.19) neither looks for its packed-weight kernels on the Hub nor warns that bf16 matmuls would cast to fp32."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers dequantise GGUFs always
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)} if gguf_file else {}


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows as generate assigns them: counting from each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def completion_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int):
    """(logits, targets) of right-padded rows from position `start` on: the fp32 logits that predict tokens
    `start + 1`.. and those tokens. Only these positions pass through the LM head (`logits_to_keep`): Gemma 3's
    262,144-token head is 62% of its weights, and a judge row's rubric is most of its tokens."""
    width = input_ids.shape[1]
    start = max(0, min(start, width - 1))
    # positions as an index tensor, not a count: the model then gathers them into a contiguous block, where a slice
    # would reach the LM head as a strided view that torch.matmul runs as a batched matmul on a copy of the whole
    # head per row (78% of a Gemma SFT step)
    keep = torch.arange(start, width, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep)
    return out.logits[:, :-1].float(), input_ids[:, start + 1 :]


def last_position(length: int, device=None) -> torch.Tensor:
    """`logits_to_keep` for the last of `length` positions, as an index: the model gathers that row into a
    contiguous block. Given the count 1 it slices a strided view, which torch.matmul, when the LM head's weight needs
    no gradient (a frozen or trained policy), runs as a batched matmul on a copy of the whole head per row: 20x
    slower generation on Gemma 3 after the first training stage."""
    return torch.tensor([length - 1], device=device)


# a shared prefix shorter than this is recomputed per row: the extra call would cost more than it saves
SHARED_PREFIX_MIN = 32


def shared_prefix(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """How many leading tokens every row of a left-padded batch has in common (at most each row's length - 1, so
    every row keeps a token after it)."""
    lengths = mask.sum(1)
    shortest = int(lengths.min())
    if shortest < 2:
        return 0
    starts = ids.shape[1] - lengths
    window = ids.gather(1, starts[:, None] + torch.arange(shortest - 1, device=ids.device)[None, :])
    same = (window == window[:1]).all(0).long()
    return int(same.cumprod(0).sum())


def prefix_first(ids: torch.Tensor, mask: torch.Tensor, shared: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch rearranged as [shared prefix][padding][rest of the row], the layout of a cache whose
    first `shared` positions were computed once for every row."""
    width, lengths = ids.shape[1], mask.sum(1)
    rest = int(lengths.max()) - shared
    cols = torch.arange(width - rest, width, device=ids.device)[None, :]
    keep = cols >= (width - lengths + shared)[:, None]  # the prefix of a shorter row is not part of its rest
    rest_ids = torch.where(keep, ids[:, width - rest :], ids[0, -1])
    head = ids[:1, width - int(lengths[0]) : width - int(lengths[0]) + shared].expand(len(ids), shared)
    return torch.cat([head, rest_ids], 1), torch.cat([torch.ones_like(head), keep.to(mask.dtype)], 1)


def context_length(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))


class GrowingKVLayer(DynamicLayer):
    """A cache layer that writes each step's keys and values into a preallocated buffer instead of concatenating:
    `DynamicLayer` copies the whole cache at every generated token, which was 42-49% of the judge stage on the bench's
    10M config (docs/benchmark.md). `reserve` is the room kept after the first write (generate's `max_new_tokens`);
    a layer that outgrows it doubles. The cached keys are views of the buffer: for inference (`inference_mode`).
    `dtype` is the buffer's (default: the keys' as computed; a bf16 model's on a CPU: fp32, `attention.cache_dtype`)."""

    def __init__(self, reserve: int, dtype: torch.dtype | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reserve, self.buffer, self.cache_dtype = reserve, None, dtype

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.get_seq_length(), key_states.shape[-2]
        buf = self.buffer
        # still ours: batch_repeat_interleave / batch_select_indices / crop may have replaced or cut the keys
        ours = buf is not None and n > 0 and self.keys.data_ptr() == buf[0].data_ptr() \
            and self.keys.stride() == buf[0].stride()
        if not ours or n + m > buf[0].shape[-2]:
            cap = 2 * (n + m) if ours else n + m + self.reserve
            buf = tuple(t.new_empty((*t.shape[:2], cap, t.shape[-1]), dtype=self.cache_dtype or t.dtype)
                        for t in (key_states, value_states))
            if n:
                buf[0][:, :, :n], buf[1][:, :, :n] = self.keys, self.values
            self.buffer = buf
        buf[0][:, :, n : n + m], buf[1][:, :, n : n + m] = key_states, value_states
        self.keys, self.values = buf[0][:, :, : n + m], buf[1][:, :, : n + m]
        return self.keys, self.values


class GrowingSlidingKVLayer(GrowingKVLayer):
    """A sliding-window layer for a generation that stays inside its window: every cached token is then in view, as
    in a full-attention layer, so it too writes into a buffer. `DynamicSlidingWindowLayer` concatenates the whole cache
    at every token: 12% of Gemma 3's judge stage, whose layers are 15 of 18 sliding (window 512, judge rows ~230
    tokens). The masks read its sizes as they read the sliding layer's before the window fills."""

    is_sliding = True

    def __init__(self, reserve: int, sliding_window: int, dtype: torch.dtype | None = None):
        super().__init__(reserve, dtype)
        self.sliding_window = sliding_window


def growing_cache(model, reserve: int, length: int | None = None, dtype: torch.dtype | None = None) -> DynamicCache:
    """A DynamicCache for `model` whose full-attention layers are `GrowingKVLayer`s, and whose sliding-window layers
    are too where the prompt's `length` plus `reserve` new tokens stay inside the window (else they stay as they
    are). Those layers keep keys and values in `dtype` (default: as the model computes them)."""
    cache = DynamicCache(config=model.config)

    def growing(layer):
        if type(layer) is DynamicLayer:
            return GrowingKVLayer(reserve, dtype)
        if type(layer) is DynamicSlidingWindowLayer and length is not None \
                and length + reserve < layer.sliding_window:
            return GrowingSlidingKVLayer(reserve, layer.sliding_window, dtype)
        return layer

    cache.layers = [growing(layer) for layer in cache.layers]
    return cache


# Outlines' token index of a judge regex, per (tokenizer, regex), shared by every backend of the process: on Gemma 3's
# 262,144 tokens one takes ~12 s to build (the vocabulary, then the regex), and a run makes several backends (the
# loop's, M0's reference, a benchmark's); the index depends on the vocabulary alone, not on the weights
REGEX_INDEXES: dict[tuple, object] = {}


class HFBackend:
    """transformers generate, batched with left padding; Outlines constrains the judge."""

    def __init__(self, model, tokenizer, progress: bool = True):
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self._outlines = None
        self._score_map: dict[tuple, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def update(self, policy, adapter_dir: Path | None = None, iteration: int = 0) -> None:
        """Swap in the next iteration's policy (merged, or the PEFT model itself); constraint indexes depend only on
        the tokenizer and stay cached."""
        self.model = policy
        if self._outlines is not None:
            self._outlines.model = policy

    def pause(self) -> None:
        """Nothing to free: training uses the same model object."""

    def _batches(self, prompts: list[str], per_batch: int, desc: str):
        """Index batches of prompts of similar length (less padding), in a fixed order."""
        lengths = [len(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        chunks = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
        return tqdm(chunks, desc=desc, disable=not self.progress, leave=False, dynamic_ncols=True)

    def _encode(self, texts: list[str], padding_side: str = "left"):
        """Token ids on the model's device: left-padded for generation, right-padded for teacher forcing."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                             padding_side=padding_side)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _gen_kwargs(self, max_new_tokens: int) -> dict:
        """generate's own settings: greedy on the rows `sampler` leaves one-hot (the draw happens there), so its
        temperature, top-p and top-k stay off."""
        return dict(max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id, do_sample=False, temperature=None, top_p=None,
                    top_k=None)

    @staticmethod
    def sampler(temperature: float, top_p: float, top_k: int) -> list:
        """The draw, as the last logits processor (none at temperature 0: generate's greedy argmax)."""
        return [NucleusSampler(temperature, top_p, top_k)] if temperature > 0 else []

    @torch.inference_mode()
    @decodes
    def generate(self, prompts, n, temperature, top_p, top_k, max_new_tokens, seed, batch_size=512, desc="sample",
                 stop=()):
        """n completions per prompt, each with its log-prob and entropy read off generate's own logits and the torch
        seed its batch was sampled under (seed + batch index). With `stop` strings a row ends once it holds one, and
        comes back cut before it, its figures over the tokens kept (where the cut falls inside a token, the text comes
        back whole and the caller cuts it)."""
        out: list[list[Completion]] = [[] for _ in prompts]
        kw = self._gen_kwargs(max_new_tokens)
        for b, idx in enumerate(self._batches(prompts, max(1, batch_size // n), desc)):
            torch.manual_seed(seed + b)
            enc = self._encode([prompts[i] for i in idx])
            stats = TokenStats()
            processors = [stats] + self.sampler(temperature, top_p, top_k)
            cache = growing_cache(self.model, max_new_tokens + 1, enc["input_ids"].shape[1], cache_dtype(self.model))
            if n > 1:  # one prefill per prompt, its cache shared by the n samples
                if enc["input_ids"].shape[1] > 1:
                    enc = self._prefill(enc, cache)
                    cache.batch_repeat_interleave(n)
                enc = {k: v.repeat_interleave(n, 0) for k, v in enc.items()}
            elif enc["input_ids"].shape[1] > 1:
                enc = self._prefill(enc, cache)
            width = enc["input_ids"].shape[1]
            criteria = StoppingCriteriaList([StopOnStrings(self.tokenizer, stop, width)] if stop else [])
            seqs = self.model.generate(**enc, **{cache_kwarg(): cache}, logits_processor=processors,
                                       stopping_criteria=criteria, **kw)
            gen = seqs[:, width:]
            texts = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
            lengths = None
            if stop:
                kept = [cut(t, stop) for t in texts]
                lengths = cut_lengths(self.tokenizer, gen, texts, kept)
                texts = [t if m is None else k for t, k, m in zip(texts, kept, lengths)]
            eos = self.tokenizer.eos_token_id
            row_stats = stats.per_row(gen, -1 if eos is None else eos, lengths)
            for j, i in enumerate(idx):
                rows = range(j * n, (j + 1) * n)
                out[i] = [Completion(texts[r], *row_stats[r], seed=seed + b) for r in rows]
        return out

    def _prefill(self, enc: dict, cache) -> dict:
        """Fill `cache` with every prompt token but the last (generate runs the last one and samples from it), at the
        positions generate gives left-padded rows; returns the batch as the cache holds it.

        A prefix every row starts with (a judge rubric with worked examples, few-shot examples: 150 of a Gemma judge
        prompt's 173 tokens) is run once and its cache copied to every row, which then reads [prefix][padding][rest]
        (positions count real tokens, as generate counts them)."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        shared = shared_prefix(ids, mask) if len(ids) > 1 else 0
        shared = shared if shared >= SHARED_PREFIX_MIN else 0
        if shared:
            ids, mask = prefix_first(ids, mask, shared)
            self.model(input_ids=ids[:1, :shared], **{cache_kwarg(): cache}, use_cache=True,
                       logits_to_keep=last_position(shared, ids.device))
            cache.batch_repeat_interleave(len(ids))
        positions = left_padded_positions(mask)
        self.model(input_ids=ids[:, shared:-1], attention_mask=mask[:, :-1], position_ids=positions[:, shared:-1],
                   **{cache_kwarg(): cache}, use_cache=True,
                   logits_to_keep=last_position(ids.shape[1] - 1 - shared, ids.device))
        return {"input_ids": ids, "attention_mask": mask}

    def _processor(self, regex: str) -> BatchedRegexProcessor:
        """A logits processor for `regex` over the whole batch, on the regex's token index as Outlines builds it, once
        per process for a vocabulary (`REGEX_INDEXES`)."""
        import outlines
        from outlines.backends import get_regex_logits_processor

        if self._outlines is None:
            self._outlines = outlines.from_transformers(self.model, self.tokenizer)
        key = (getattr(self.tokenizer, "name_or_path", ""), len(self.tokenizer), self.tokenizer.eos_token_id, regex)
        if key not in REGEX_INDEXES:
            REGEX_INDEXES[key] = get_regex_logits_processor(None, self._outlines, regex).index
        return BatchedRegexProcessor(REGEX_INDEXES[key])

    def _score_values(self, scores: list[int], vocab_size: int, exact: bool = False) -> torch.Tensor:
        """Per token id: the score digit the token ends with (or, `exact`, that it is), NaN if none."""
        key = (tuple(scores), vocab_size, exact)
        if key not in self._score_map:
            values = torch.full((vocab_size,), float("nan"))
            wanted = {str(s): float(s) for s in scores}
            for tid in range(min(vocab_size, len(self.tokenizer))):
                text = self.tokenizer.decode([tid])
                if text and text[-1] in wanted and (not exact or text in wanted):
                    values[tid] = wanted[text[-1]]
            self._score_map[key] = values
        return self._score_map[key]

    @torch.inference_mode()
    def score_next(self, prompts, scores, temperature, seed, batch_size=512, desc="judge"):
        """Score-only judgments from one forward pass per batch: the next token's distribution restricted to the score
        tokens gives the expected score; its argmax (temperature 0) or a draw is the sampled one."""
        out: list[JudgeOutput | None] = [None] * len(prompts)
        for b, idx in enumerate(self._batches(prompts, batch_size, desc)):
            enc = self._encode([prompts[i] for i in idx])
            cache = DynamicCache(config=self.model.config)
            if enc["input_ids"].shape[1] > 1:
                enc = self._prefill(enc, cache)  # the rubric every row shares runs once
            positions = left_padded_positions(enc["attention_mask"])
            logits = self.model(input_ids=enc["input_ids"][:, -1:], attention_mask=enc["attention_mask"],
                                position_ids=positions[:, -1:], **{cache_kwarg(): cache}, use_cache=True,
                                logits_to_keep=1).logits[:, -1].float()
            values = self._score_values(scores, logits.shape[-1], exact=True).to(logits.device)
            logits = logits.masked_fill(torch.isnan(values), -math.inf)
            probs = torch.softmax(logits, -1)
            expected = (probs * values.nan_to_num(0.0)).sum(-1)
            if temperature > 0:
                torch.manual_seed(seed + b)
                picks = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(-1)
            else:
                picks = logits.argmax(-1)
            for j, i in enumerate(idx):
                tid = int(picks[j])
                out[i] = JudgeOutput(raw=self.tokenizer.decode([tid]), expected=float(expected[j]),
                                     sampled=float(values[tid]))
        return out

    @torch.inference_mode()
    @decodes
    def judge(self, prompts, regex, scores, temperature, max_new_tokens, seed, batch_size=512, desc="judge"):
        """Constrained judgments with the expected score read off the score token's distribution.

        The score is the last token before EOS; its masked distribution (only score tokens
        allowed there) gives sum_v p(v) * v in the same pass that decodes it.
        """
        full = re.compile(regex)
        out: list[JudgeOutput | None] = [None] * len(prompts)
        kw = self._gen_kwargs(max_new_tokens)
        eos = self.tokenizer.eos_token_id
        values = self._score_values(scores, self.model.get_output_embeddings().weight.shape[0]).to(self.device)
        ids = (~torch.isnan(values)).nonzero().squeeze(-1)
        for b, idx in enumerate(self._batches(prompts, batch_size, desc)):
            torch.manual_seed(seed + b)
            enc = self._encode([prompts[i] for i in idx])
            reader = ScoreReader(ids)
            processors = [self._processor(regex), reader] + self.sampler(temperature, 1.0, 0)
            cache = growing_cache(self.model, max_new_tokens + 1, enc["input_ids"].shape[1], cache_dtype(self.model))
            if enc["input_ids"].shape[1] > 1:
                enc = self._prefill(enc, cache)  # the rubric every row shares runs once
            seqs = self.model.generate(**enc, **{cache_kwarg(): cache}, logits_processor=processors, **kw)
            gen = seqs[:, enc["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
            for j, i in enumerate(idx):
                text = texts[j]
                m = full.fullmatch(text)
                if m is None:  # truncated before the regex completed
                    out[i] = JudgeOutput(raw=text, expected=math.nan, sampled=math.nan)
                    continue
                toks = gen[j].tolist()
                last = len(toks) - 1
                while last > 0 and toks[last] in (eos, self.tokenizer.pad_token_id):
                    last -= 1
                logits = reader.steps[last][j]  # the score tokens where the score was decoded: nothing else allowed
                probs = torch.softmax(logits / temperature if temperature > 0 else logits, -1)
                expected = float((probs * values[ids]).sum()) if torch.isfinite(logits).any() else float(text[-1])
                out[i] = JudgeOutput(raw=text, expected=expected, sampled=float(text[-1]))
        return out

    @torch.inference_mode()
    def logprob(self, prompts, completions, batch_size=256, desc="logprob"):
        """Mean log-prob and mean entropy (nats) per completion token at temperature 1, teacher-forced
        (completion + EOS). Sampled completions carry theirs already (`Completion.logprob`)."""
        eos = self.tokenizer.eos_token
        texts = [p + c + eos for p, c in zip(prompts, completions)]
        n_prompt = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        out: list[tuple[float, float]] = [(math.nan, math.nan)] * len(texts)
        for idx in self._batches(texts, batch_size, desc):
            enc = self._encode([texts[i] for i in idx], padding_side="right")
            start = min(n_prompt[i] for i in idx) - 1  # logits of prompt tokens are not needed
            logits, tgt = completion_logits(self.model, enc["input_ids"], enc["attention_mask"], start)
            logp = torch.log_softmax(logits, -1)
            tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            ent = -(logp.exp() * logp).sum(-1)
            for j, i in enumerate(idx):
                n = int(enc["attention_mask"][j].sum())
                sl = slice(n_prompt[i] - 1 - start, n - 1 - start)
                k = max(1, n - n_prompt[i])
                out[i] = (float(tok_lp[j, sl].sum()) / k, float(ent[j, sl].sum()) / k)
        return out
