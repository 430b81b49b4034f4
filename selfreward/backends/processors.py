"""The logits processors the transformers backend hands `generate`: Outlines' regex constraint for a whole batch,
the token statistics of a sampling pass, the draw itself, and the score tokens of a judgment. Each runs at every
generated token over (rows x vocabulary) logits: 262,144 columns on Gemma 3, so each is written to pass over them as
few times as it can, a few rows at a time."""

from __future__ import annotations

import math

import torch


class BatchedRegexProcessor:
    """Outlines' regex constraint for a whole batch: one outlines_core `Guide` per row walks the regex's token index,
    and the rows' allowed-token bitmasks are applied to the logits in one vectorised step.

    Outlines' own transformers processor applies each row's mask in a separate compiled call, which was half the
    judge stage's time on the built-in model (profile in docs/benchmark.md).
    """

    # per byte value, which of its 8 bits are clear: the tokens a bitmask byte forbids
    FORBIDDEN = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1) == 0

    def __init__(self, index):
        self.index, self.guides, self.bits = index, None, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        from outlines_core import Guide
        from outlines_core.kernels.torch import fill_next_token_bitmask

        rows, vocab = scores.shape
        if self.guides is None:  # first step: the prompt only
            self.guides = [Guide(self.index) for _ in range(rows)]
            self.bits = torch.empty((rows, (vocab + 31) // 32), dtype=torch.int32)
            self.forbidden = self.FORBIDDEN.to(scores.device)
        else:
            for guide, token in zip(self.guides, input_ids[:, -1].tolist()):
                # a finished guide only stays put on EOS/padding (as Outlines' processor does)
                if not guide.is_finished() or guide.accepts_tokens([token]):
                    guide.advance(token_id=token, return_tokens=False)
        for i, guide in enumerate(self.guides):
            fill_next_token_bitmask(guide, self.bits[i : i + 1])
        # token t is bit t % 32 of word t // 32: byte (t % 32) // 8 of that word, little-endian, bit t % 8
        octets = self.bits.view(torch.uint8).to(scores.device, non_blocking=True).int()
        forbidden = self.forbidden[octets].view(rows, -1)[:, :vocab]
        return scores.masked_fill_(forbidden, -math.inf)  # generate hands each step's logits as a fresh copy


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

    def per_row(self, generated: torch.Tensor, stop_id: int,
                lengths: list[int | None] | None = None) -> list[tuple[float, float]]:
        """(mean log-prob, mean entropy) per row over its tokens up to and including the first `stop_id` (EOS), or
        over its first `lengths[row]` tokens where that is given (a response cut at a stop string)."""
        if self.prev is None:
            return [(math.nan, math.nan)] * len(generated)
        last = self._logp(generated[:, len(self.chosen)])
        chosen, entropy = torch.stack(self.chosen + [last], 1), torch.stack(self.entropy, 1)
        stop = (generated == stop_id).int()
        kept = (stop.cumsum(1) - stop) == 0  # before the first stop, and the stop itself
        if lengths is not None and any(n is not None for n in lengths):
            cols = torch.arange(generated.shape[1], device=generated.device)[None, :]
            n = torch.tensor([generated.shape[1] if m is None else m for m in lengths], device=generated.device)
            given = torch.tensor([m is not None for m in lengths], device=generated.device)[:, None]
            kept = torch.where(given, cols < n[:, None], kept)
        n = kept.sum(1).clamp_min(1)
        lp = torch.where(kept, chosen, 0.0).sum(1) / n
        ent = torch.where(kept, entropy, 0.0).sum(1) / n
        return list(zip(lp.tolist(), ent.tolist()))


class StopOnStrings:
    """A stopping criterion: a row is done once its generated text holds one of `stops` (a base model's newline or
    comma after its answer), so a batch ends when every row has answered, not at `max_new_tokens`."""

    def __init__(self, tokenizer, stops, prompt_width: int):
        self.tokenizer, self.stops, self.width = tokenizer, [s for s in stops if s], prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def cut_lengths(tokenizer, generated: torch.Tensor, texts: list[str], cut_texts: list[str]) -> list[int | None]:
    """Per row, how many generated tokens decode to exactly its cut text (None where the row was not cut, or the cut
    falls inside a token: that row's figures are then taken teacher-forced)."""
    out: list[int | None] = []
    for row, text, kept in zip(generated.tolist(), texts, cut_texts):
        if kept == text or not kept:
            out.append(None)
            continue
        m = next((m for m in range(1, len(row) + 1) if len(tokenizer.decode(row[:m], skip_special_tokens=True))
                  > len(kept)), None)  # the first token that reaches past the kept text
        m = None if m is None else m - 1
        out.append(m if m and tokenizer.decode(row[:m], skip_special_tokens=True) == kept else None)
    return out


class NucleusSampler:
    """Temperature, top-k and top-p sampling as one logits processor that draws the token itself, from each row's
    most likely tokens, and hands generate a one-hot row (generate then runs greedy).

    transformers' warpers sort the whole vocabulary and draw from all of it at every step: on Gemma 3's 262,144
    tokens that sort and draw were 61% of the sampling stage (docs/benchmark.md). Here a row's top-p set is found
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
