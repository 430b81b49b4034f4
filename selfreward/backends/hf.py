"""The transformers backend: model loading, batched sampling, Outlines-constrained judging, log-probs."""

from __future__ import annotations

import functools
import inspect
import math
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache, DynamicLayer

from selfreward.backends import JudgeOutput, precision
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
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=not gguf_file, **kw)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(dev).eval(), tokenizer


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
    10M config (README, Benchmark). `reserve` is the room kept after the first write (generate's `max_new_tokens`);
    a layer that outgrows it doubles. The cached keys are views of the buffer: for inference (`inference_mode`)."""

    def __init__(self, reserve: int, **kwargs):
        super().__init__(**kwargs)
        self.reserve, self.buffer = reserve, None

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
            buf = tuple(t.new_empty((*t.shape[:2], cap, t.shape[-1])) for t in (key_states, value_states))
            if n:
                buf[0][:, :, :n], buf[1][:, :, :n] = self.keys, self.values
            self.buffer = buf
        buf[0][:, :, n : n + m], buf[1][:, :, n : n + m] = key_states, value_states
        self.keys, self.values = buf[0][:, :, : n + m], buf[1][:, :, : n + m]
        return self.keys, self.values


def growing_cache(model, reserve: int) -> DynamicCache:
    """A DynamicCache for `model` whose full-attention layers are `GrowingKVLayer`s (sliding ones stay as they are)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingKVLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class BatchedRegexProcessor:
    """Outlines' regex constraint for a whole batch: one outlines_core `Guide` per row walks the regex's token index,
    and the rows' allowed-token bitmasks are applied to the logits in one vectorised step.

    Outlines' own transformers processor applies each row's mask in a separate compiled call, which was half the
    judge stage's time on the built-in model (profile in the README's benchmark section).
    """

    def __init__(self, index):
        self.index, self.guides, self.bits = index, None, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        from outlines_core import Guide
        from outlines_core.kernels.torch import fill_next_token_bitmask

        rows, vocab = scores.shape
        if self.guides is None:  # first step: the prompt only
            self.guides = [Guide(self.index) for _ in range(rows)]
            self.bits = torch.empty((rows, (vocab + 31) // 32), dtype=torch.int32)
            self.shifts = torch.arange(32, dtype=torch.int32, device=scores.device)
        else:
            for guide, token in zip(self.guides, input_ids[:, -1].tolist()):
                # a finished guide only stays put on EOS/padding (as Outlines' processor does)
                if not guide.is_finished() or guide.accepts_tokens([token]):
                    guide.advance(token_id=token, return_tokens=False)
        for i, guide in enumerate(self.guides):
            fill_next_token_bitmask(guide, self.bits[i : i + 1])
        words = self.bits.to(scores.device, non_blocking=True)
        allowed = ((words.unsqueeze(-1) >> self.shifts) & 1).bool().view(rows, -1)[:, :vocab]
        return scores.masked_fill(~allowed, -math.inf)


# rows of a (rows x vocabulary) logits tensor processed at a time: 8 rows of Gemma's 262,144 logits (8 MiB in fp32)
# stay in cache through a processor's several passes, where the whole batch streams from memory at every pass
ROW_CHUNK = 8


def row_chunks(n: int):
    return (slice(i, min(n, i + ROW_CHUNK)) for i in range(0, n, ROW_CHUNK))


class TokenStats:
    """Per generated token, the log-prob of the token chosen and the entropy (nats) of the distribution it was chosen
    from, read off the raw logits generate computes anyway (first in the processor list: before temperature and
    top-p), so the sampling stage needs no second, teacher-forced pass. Keeps one step's logits and log-normalisers
    (the chosen token's log-prob is its logit minus the normaliser), not the log-probs."""

    def __init__(self):
        self.prev, self.lse_prev, self.chosen, self.entropy = None, None, [], []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.chosen.append(self._logp(input_ids[:, -1]))
        lse, entropy = scores.new_empty(len(scores), dtype=torch.float32), scores.new_empty(len(scores),
                                                                                            dtype=torch.float32)
        for rows in row_chunks(len(scores)):
            x = scores[rows].float()
            lse[rows] = torch.logsumexp(x, -1)
            entropy[rows] = torch.special.entr(torch.exp(x - lse[rows, None])).sum(-1)  # 0 log 0 = 0
        self.prev, self.lse_prev = scores, lse
        self.entropy.append(entropy)
        return scores

    def _logp(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.prev.gather(-1, tokens[:, None]).squeeze(-1).float() - self.lse_prev

    def per_row(self, generated: torch.Tensor, stop_id: int) -> list[tuple[float, float]]:
        """(mean log-prob, mean entropy) per row over its tokens up to and including the first `stop_id` (EOS)."""
        if self.prev is None:
            return [(math.nan, math.nan)] * len(generated)
        last = self._logp(generated[:, len(self.chosen)])
        chosen, entropy = torch.stack(self.chosen + [last], 1), torch.stack(self.entropy, 1)
        stop = (generated == stop_id).int()
        kept = (stop.cumsum(1) - stop) == 0  # before the first stop, and the stop itself
        n = kept.sum(1).clamp_min(1)
        lp = torch.where(kept, chosen, 0.0).sum(1) / n
        ent = torch.where(kept, entropy, 0.0).sum(1) / n
        return list(zip(lp.tolist(), ent.tolist()))


class NucleusSampler:
    """Temperature, top-k and top-p sampling as one logits processor that draws the token itself, from each row's
    most likely tokens, and hands generate a one-hot row (generate then runs greedy).

    transformers' warpers sort the whole vocabulary and draw from all of it at every step: on Gemma 3's 262,144
    tokens that sort and draw were 61% of the sampling stage (README, Benchmark). Here a row's top-p set is found
    among its 1,024 most likely tokens, or 16,384 where those hold less than top_p of the mass, or the whole sorted
    vocabulary where even those do not: the kept set is transformers' (the most likely tokens until their mass reaches
    top_p, at least one). Rows go ROW_CHUNK at a time; the draw uses torch's global generator, which the caller
    seeds."""

    CANDIDATES = (1024, 16384)

    def __init__(self, temperature: float, top_p: float, top_k: int):
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = torch.empty((len(scores), 1), dtype=torch.long, device=scores.device)
        for rows in row_chunks(len(scores)):
            tokens[rows] = self._draw(scores[rows].float() / self.temperature)
        return torch.full_like(scores, -math.inf).scatter_(1, tokens, 0.0)

    def _draw(self, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        if self.top_p >= 1.0 and not self.top_k:  # nothing is cut: draw from the whole distribution
            return torch.multinomial(torch.softmax(logits, -1), 1)
        if self.top_k:  # transformers' top-k, then top-p renormalised over the k survivors
            idx, weights = self._kept(logits, min(self.top_k, vocab), full=True)
            return idx.gather(1, torch.multinomial(weights, 1))
        tokens = torch.empty((len(logits), 1), dtype=torch.long, device=logits.device)
        todo = torch.arange(len(logits), device=logits.device)
        for k in (*self.CANDIDATES, vocab):
            k = min(k, vocab)
            idx, weights = self._kept(logits[todo], k, full=False)
            short = weights.sum(-1) < self.top_p if k < vocab else torch.zeros_like(todo, dtype=torch.bool)
            done = ~short  # nothing was cut in a short row: its top_p mass lies partly beyond these k
            if done.any():
                tokens[todo[done]] = idx[done].gather(1, torch.multinomial(weights[done], 1))
            todo = todo[short]
            if not len(todo):
                break
        return tokens

    def _kept(self, logits: torch.Tensor, k: int, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, probabilities) of the `k` most likely tokens per row, zero where top-p drops them; the mass is
        normalised over the whole vocabulary, or over the k alone (`full`: top-k, whose survivors top-p renormalises,
        as transformers' warpers do)."""
        vals, idx = logits.topk(k, -1)
        probs = torch.softmax(vals, -1) if full else (vals - torch.logsumexp(logits, -1, keepdim=True)).exp()
        if self.top_p < 1.0:
            before = probs.cumsum(-1) - probs
            drop = before >= self.top_p
            drop[:, 0] = False
            probs = probs.masked_fill(drop, 0.0)
        return idx, probs


class ScoreReader:
    """At every step of a constrained judgment, the constrained logits of the score tokens (rows x score tokens). At
    the step that decodes the score the schema allows nothing but score digits, so their softmax there is the score's
    whole distribution: no pass over the vocabulary per step, and no copy of it (generate's output_scores would keep
    2.7 GB for 64 Gemma judgments of 40 tokens)."""

    def __init__(self, ids: torch.Tensor):
        self.ids, self.steps = ids, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores[:, self.ids].float())
        return scores


class HFBackend:
    """transformers generate, batched with left padding; Outlines constrains the judge."""

    def __init__(self, model, tokenizer, progress: bool = True):
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self._outlines = None
        self._processors: dict[str, object] = {}
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

    def _encode(self, texts: list[str]):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _gen_kwargs(self, temperature: float, top_p: float, top_k: int, max_new_tokens: int) -> dict:
        kw = dict(max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                  eos_token_id=self.tokenizer.eos_token_id)
        # sampling happens in `NucleusSampler` (`sampler`); generate itself runs greedy on its one-hot rows
        return dict(kw, do_sample=False, temperature=None, top_p=None, top_k=None)

    @staticmethod
    def sampler(temperature: float, top_p: float, top_k: int) -> list:
        """The draw, as the last logits processor (none at temperature 0: generate's greedy argmax)."""
        return [NucleusSampler(temperature, top_p, top_k)] if temperature > 0 else []

    @torch.inference_mode()
    def generate(self, prompts, n, temperature, top_p, top_k, max_new_tokens, seed, batch_size=512, desc="sample"):
        """n completions per prompt, each with its log-prob and entropy read off generate's own logits and the torch
        seed its batch was sampled under (seed + batch index)."""
        out: list[list[Completion]] = [[] for _ in prompts]
        kw = self._gen_kwargs(temperature, top_p, top_k, max_new_tokens)
        for b, idx in enumerate(self._batches(prompts, max(1, batch_size // n), desc)):
            torch.manual_seed(seed + b)
            enc = self._encode([prompts[i] for i in idx])
            stats = TokenStats()
            processors = [stats] + self.sampler(temperature, top_p, top_k)
            cache = growing_cache(self.model, max_new_tokens + 1)
            if n > 1:  # one prefill per prompt, its cache shared by the n samples
                if enc["input_ids"].shape[1] > 1:
                    enc = self._prefill(enc, cache)
                    cache.batch_repeat_interleave(n)
                enc = {k: v.repeat_interleave(n, 0) for k, v in enc.items()}
            elif enc["input_ids"].shape[1] > 1:
                enc = self._prefill(enc, cache)
            seqs = self.model.generate(**enc, **{cache_kwarg(): cache}, logits_processor=processors, **kw)
            gen = seqs[:, enc["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
            row_stats = stats.per_row(gen, -1 if self.tokenizer.eos_token_id is None else self.tokenizer.eos_token_id)
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
        if shared >= SHARED_PREFIX_MIN:
            ids, mask = prefix_first(ids, mask, shared)
            self.model(input_ids=ids[:1, :shared], **{cache_kwarg(): cache}, use_cache=True,
                       logits_to_keep=last_position(shared, ids.device))
            cache.batch_repeat_interleave(len(ids))
        positions = left_padded_positions(mask)
        start = shared if shared >= SHARED_PREFIX_MIN else 0
        self.model(input_ids=ids[:, start:-1], attention_mask=mask[:, :-1], position_ids=positions[:, start:-1],
                   **{cache_kwarg(): cache}, use_cache=True,
                   logits_to_keep=last_position(ids.shape[1] - 1 - start, ids.device))
        return {"input_ids": ids, "attention_mask": mask}

    def _processor(self, regex: str) -> BatchedRegexProcessor:
        """A logits processor for `regex` over the whole batch (Outlines builds the regex's token index once)."""
        import outlines
        from outlines.backends import get_regex_logits_processor

        if self._outlines is None:
            self._outlines = outlines.from_transformers(self.model, self.tokenizer)
        if regex not in self._processors:
            self._processors[regex] = get_regex_logits_processor(None, self._outlines, regex).index
        return BatchedRegexProcessor(self._processors[regex])

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
    def judge(self, prompts, regex, scores, temperature, max_new_tokens, seed, batch_size=512, desc="judge"):
        """Constrained judgments with the expected score read off the score token's distribution.

        The score is the last token before EOS; its masked distribution (only score tokens
        allowed there) gives sum_v p(v) * v in the same pass that decodes it.
        """
        full = re.compile(regex)
        out: list[JudgeOutput | None] = [None] * len(prompts)
        kw = self._gen_kwargs(temperature, 1.0, 0, max_new_tokens)
        eos = self.tokenizer.eos_token_id
        values = self._score_values(scores, self.model.get_output_embeddings().weight.shape[0]).to(self.device)
        ids = (~torch.isnan(values)).nonzero().squeeze(-1)
        for b, idx in enumerate(self._batches(prompts, batch_size, desc)):
            torch.manual_seed(seed + b)
            enc = self._encode([prompts[i] for i in idx])
            reader = ScoreReader(ids)
            processors = [self._processor(regex), reader] + self.sampler(temperature, 1.0, 0)
            cache = growing_cache(self.model, max_new_tokens + 1)
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
        self.tokenizer.padding_side = "right"
        try:
            for idx in self._batches(texts, batch_size, desc):
                enc = self._encode([texts[i] for i in idx])
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
        finally:
            self.tokenizer.padding_side = "left"
        return out
