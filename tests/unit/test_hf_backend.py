import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from selfreward.backends.hf import HFBackend
from selfreward.backends.processors import NucleusSampler
from selfreward.prompting import chat


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_samples_what_plain_generate_samples(tiny_model, temperature):
    """K samples from one prefill per prompt are the samples plain generate gives on the prompts repeated K times
    under the same seed, left padding included (prompts of different lengths share a batch)."""
    model, tok = tiny_model
    prompts = [chat(tok, p) for p in ["2x+1=5", "13x+77=272", "x+0=1", "7x+20=90", "3x+3=117"]]
    backend = HFBackend(model, tok, progress=False)
    ours = backend.generate(prompts, 4, temperature, 0.95, 0, 8, seed=11, batch_size=64)

    torch.manual_seed(11)  # one batch: generate seeds it with seed + 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    enc = backend._encode([prompts[i] for i in order])
    enc = {k: v.repeat_interleave(4, 0) for k, v in enc.items()}
    seqs = model.generate(**enc, logits_processor=backend.sampler(temperature, 0.95, 0),
                          **backend._gen_kwargs(8))
    texts = tok.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    plain = {i: texts[j * 4 : (j + 1) * 4] for j, i in enumerate(order)}
    assert [[c.text for c in comps] for comps in ours] == [plain[i] for i in range(len(prompts))]
    assert all(c.seed == 11 for comps in ours for c in comps)  # one batch: every completion drawn under seed + 0
    if temperature > 0:
        assert any(len({c.text for c in s}) > 1 for s in ours)  # real sampling: the K differ


@pytest.mark.parametrize("equations", [["2x+1=5", "13x+77=272", "7x+20=90"], ["2x+1=5", "3x+1=7", "4x+1=9"]])
def test_sampling_pass_log_probs_match_teacher_forcing(equations):
    """The log-probs each completion carries, read off generate's own logits, are the teacher-forced ones
    (completions that end with EOS: the shipped seed's all do), so the sampling stage needs no second pass; for a
    left-padded batch and for one whose prompts are all the same length."""
    from selfreward.backends.hf import load
    from selfreward.m0.builtin import ensure
    from selfreward.m0.recipe import BuiltinRecipe

    model, tok = load(str(ensure(BuiltinRecipe())), device="cpu", dtype="float32")
    prompts = [chat(tok, p) for p in equations]
    backend = HFBackend(model, tok, progress=False)
    out = backend.generate(prompts, 3, 1.0, 0.95, 0, 40, seed=5)
    flat_in = [p for p, comps in zip(prompts, out) for _ in comps]
    fast = [(c.logprob, c.entropy) for comps in out for c in comps]
    slow = backend.logprob(flat_in, [c.text for comps in out for c in comps])
    assert [a for a, _ in fast] == pytest.approx([a for a, _ in slow], abs=1e-4)
    assert [e for _, e in fast] == pytest.approx([e for _, e in slow], abs=1e-4)
    assert all(a < 0 for a, _ in fast)


def test_rows_end_at_stop_strings_with_the_figures_of_the_tokens_kept():
    """With stop strings a row ends once it holds one and comes back cut before it (the draws are those of a run
    without them); its log-prob and entropy are the means over the kept tokens, as a forward pass gives them."""
    from selfreward.backends.hf import load
    from selfreward.m0.builtin import ensure
    from selfreward.m0.recipe import BuiltinRecipe
    from selfreward.prompting import cut

    model, tok = load(str(ensure(BuiltinRecipe())), device="cpu", dtype="float32")
    prompts = [chat(tok, p) for p in ["2x+1=5", "13x+77=272", "7x+20=90"]]
    backend = HFBackend(model, tok, progress=False)
    whole = backend.generate(prompts, 3, 1.0, 0.95, 0, 40, seed=5)
    stopped = backend.generate(prompts, 3, 1.0, 0.95, 0, 40, seed=5, stop=["="])
    pairs = [(p, a, b) for p, ca, cb in zip(prompts, whole, stopped) for a, b in zip(ca, cb)]
    assert all(b.text == cut(a.text, ["="]) for _, a, b in pairs)
    assert any(b.text != a.text for _, a, b in pairs)  # the stop string was met
    for p, _, b in pairs:
        ids = tok(p + b.text, add_special_tokens=False, return_tensors="pt").input_ids
        n = len(tok(p, add_special_tokens=False).input_ids)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, n - 1 : -1].float(), -1)
        tok_lp = logp.gather(-1, ids[0, n:, None]).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        assert b.logprob == pytest.approx(float(tok_lp.mean()), abs=1e-4)
        assert b.entropy == pytest.approx(float(ent.mean()), abs=1e-4)


@pytest.mark.parametrize("reserve", [0, 3, 40])
@pytest.mark.parametrize("prompts", [["2x+1=5", "13x+77=272", "x+0=1"], ["2x+1=5", "3x+1=7", "4x+1=9"]])
def test_growing_kv_cache_decodes_what_the_dynamic_cache_decodes(tiny_model, reserve, prompts):
    """The preallocated cache (no per-token concatenation), through the decode attention, gives generate the same
    logits and tokens as transformers' DynamicCache and SDPA, whether its reserve is too small (it doubles) or enough,
    for a batch with left padding and one without (its rows all the same length); the keys it hands attention are
    views of one buffer."""
    from selfreward.backends.attention import decoding
    from selfreward.backends.hf import GrowingKVLayer, cache_kwarg, growing_cache

    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    enc = backend._encode([chat(tok, p) for p in prompts])
    assert bool(enc["attention_mask"].all()) == (prompts[1] == "3x+1=7")  # padded, then not
    kw = dict(backend._gen_kwargs(12), min_new_tokens=12, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        plain = model.generate(**enc, **kw)
        cache = growing_cache(model, reserve)
        with decoding(model):
            ours = model.generate(**enc, **{cache_kwarg(): cache}, **kw)
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.scores, plain.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingKVLayer)
    assert layer.keys.shape[-2] == enc["input_ids"].shape[1] + 11  # the last token is never fed back
    assert layer.keys.data_ptr() == layer.buffer[0].data_ptr()
    assert layer.buffer[0].shape[-2] >= layer.keys.shape[-2]


@pytest.mark.parametrize("window", [40, 12])
def test_growing_cache_on_sliding_window_layers_decodes_what_the_dynamic_cache_decodes(tiny_model, window):
    """A Gemma 3 model (sliding-window and full-attention layers, random weights): where the prompt and the new tokens
    fit the window, its sliding layers write into a buffer too, with the same tokens and logits as transformers' own
    cache; where they do not, they stay transformers' sliding layers (which then drop what leaves the window)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from selfreward.backends.attention import NAME, decoding
    from selfreward.backends.hf import GrowingKVLayer, GrowingSlidingKVLayer, cache_kwarg, growing_cache

    _, tok = tiny_model
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=window,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                              bos_token_id=tok.bos_token_id)
    model = Gemma3ForCausalLM(config).eval()
    backend = HFBackend(model, tok, progress=False)
    enc = backend._encode([chat(tok, p) for p in ["2x+1=5", "13x+77=272", "x+0=1"]])
    width, new = enc["input_ids"].shape[1], 12
    kw = dict(backend._gen_kwargs(new), min_new_tokens=new, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        plain = model.generate(**enc, **kw)
        cache = growing_cache(model, new + 1, width)
        with decoding(model):  # 2 query heads share each KV head: packed side by side
            assert model.config._attn_implementation == NAME
            ours = model.generate(**enc, **{cache_kwarg(): cache}, **kw)
        assert model.config._attn_implementation == "sdpa"
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.scores, plain.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    fits = width + new + 1 < window
    assert type(cache.layers[0]) is (GrowingSlidingKVLayer if fits else DynamicSlidingWindowLayer)
    assert type(cache.layers[2]) is GrowingKVLayer and cache.is_sliding == [True, True, False]
    assert fits == (window == 40)  # both paths are exercised


@pytest.mark.parametrize("dtype, cache", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                          (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("mask", ["none", "bool", "additive"])
def test_decode_attention_computes_what_sdpa_computes(dtype, cache, kv_heads, mask):
    """One query token per row, on a CPU: the matmul path (query heads that share a KV head packed side by side)
    against transformers' SDPA function on the same inputs, with a padding mask as bool, as additive, or none; a bf16
    query on an fp32 cache (a bf16 model's generation) within the query's rounding, bf16 throughout within bf16's."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from selfreward.backends.attention import decode_attention

    torch.manual_seed(0)
    batch, heads, length, dim = 3, 4, 9, 16
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q = torch.randn(batch, heads, 1, dim)
    k, v = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    keep[0, ..., :4] = False  # a left-padded row
    attn_mask = {"none": None, "bool": keep,
                 "additive": torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)}[mask]
    ref, _ = sdpa_attention_forward(module, q, k, v, attn_mask, scaling=0.3)
    low = attn_mask.to(dtype) if mask == "additive" else attn_mask
    out, _ = decode_attention(module, q.to(dtype), k.to(cache), v.to(cache), low, scaling=0.3)
    assert out.shape == ref.shape == (batch, 1, heads, dim) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-3 if cache == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_a_bf16_model_decodes_on_an_fp32_cache(tiny_model):
    """While decoding on a CPU, a bf16 model's cache holds fp32 keys and values (a bf16 matmul would round the
    scores); an fp32 model's cache stays as it is, and so does any model's outside `decoding`."""
    import copy

    from selfreward.backends.attention import cache_dtype, decoding
    from selfreward.backends.hf import cache_kwarg, growing_cache

    model, tok = tiny_model
    half = copy.deepcopy(model).to(torch.bfloat16)
    backend = HFBackend(half, tok, progress=False)
    enc = backend._encode([chat(tok, p) for p in ["2x+1=5", "13x+77=272", "x+0=1"]])
    assert cache_dtype(half) is None
    with torch.inference_mode(), decoding(half), decoding(model):
        assert cache_dtype(half) == torch.float32 and cache_dtype(model) is None
        cache = growing_cache(half, 9, enc["input_ids"].shape[1], cache_dtype(half))
        out = half.generate(**enc, **{cache_kwarg(): cache}, **backend._gen_kwargs(8), min_new_tokens=8,
                            output_logits=True, return_dict_in_generate=True)
    assert cache.layers[0].buffer[0].dtype == torch.float32 and cache.layers[0].keys.dtype == torch.float32
    assert torch.isfinite(torch.stack(out.logits)).all()


@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 0.95, 0), (0.7, 0.9, 0), (1.0, 0.95, 40),
                                                       (1.0, 0.5, 2000), (1.0, 1.0, 0), (0.8, 1.0, 5)])
def test_nucleus_sampler_keeps_what_transformers_warpers_keep(temperature, top_p, top_k):
    """The sampler's kept tokens and their probabilities are transformers' (temperature, top-k, top-p warpers), also
    for rows whose nucleus reaches past its 1,024 candidates (flat rows, sorted in full), and its draws follow them."""
    torch.manual_seed(0)
    vocab = 5000
    peaked = torch.randn(6, vocab) * 8
    flat = torch.randn(4, vocab) * 0.1  # top_p of the mass needs most of the vocabulary
    logits = torch.cat([peaked, flat])
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    expected = torch.softmax(warpers(None, logits.clone()), -1)
    sampler = NucleusSampler(temperature, top_p, top_k)
    counts = torch.zeros_like(logits)
    for _ in range(400):
        one_hot = sampler(None, logits.clone())
        assert ((one_hot == 0).sum(-1) == 1).all() and torch.isinf(one_hot).sum() == one_hot.numel() - len(logits)
        counts += (one_hot == 0).float()
    assert ((counts > 0) <= (expected > 0)).all()  # never a token transformers cuts
    frequent = expected.max(-1).values > 0.2  # rows with a token likely enough to check its frequency
    top = expected.argmax(-1)
    rows = frequent.nonzero().squeeze(-1)
    assert torch.allclose(counts[rows, top[rows]] / 400, expected[rows, top[rows]], atol=0.1)
    if top_p < 1 and not top_k:  # the exact kept sets, through the candidates and the full-sort paths alike
        k = min(sampler.CANDIDATES[0], vocab)
        idx, weights = sampler._kept(logits / temperature, k, full=False)
        short = weights.sum(-1) < top_p
        assert short[6:].all() and not short[:6].any()
        got = torch.zeros_like(logits).scatter_(1, idx, weights)[~short]
        torch.testing.assert_close(got / got.sum(-1, keepdim=True), expected[~short], atol=1e-5, rtol=1e-4)
        idx, weights = sampler._kept(logits[short] / temperature, vocab, full=False)
        got = torch.zeros(int(short.sum()), vocab).scatter_(1, idx, weights)
        torch.testing.assert_close(got / got.sum(-1, keepdim=True), expected[short], atol=1e-5, rtol=1e-4)


def test_a_shared_prefix_runs_once_and_changes_nothing(tiny_model, monkeypatch):
    """Rows that start alike (a rubric, few-shot examples) get the prefix's cache computed once and copied: the same
    greedy and sampled tokens, judgments and score-only figures as every row run in full."""
    import selfreward.backends.hf as hf
    from selfreward.backends.hf import prefix_first, shared_prefix

    model, tok = tiny_model
    shots = "solve 2x+3=11 x=4; solve 5x+1=26 x=5; solve 3x+7=19 x=4; "  # 60 characters: 60 tokens here
    prompts = [chat(tok, shots + p) for p in ["2x+1=5", "13x+77=272", "x+0=1", "7x+20=90", "3x+3=117"]]
    backend = HFBackend(model, tok, progress=False)
    enc = backend._encode(prompts)
    n = shared_prefix(enc["input_ids"], enc["attention_mask"])
    assert n >= len(shots)
    ids, mask = prefix_first(enc["input_ids"], enc["attention_mask"], n)
    assert [tok.decode(r[m.bool()]) for r, m in zip(ids, mask)] == tok.batch_decode(
        [r[m.bool()] for r, m in zip(enc["input_ids"], enc["attention_mask"])])  # the same rows, rearranged
    checks = [f"check {p} x={x}" for p, x in [("2x+1=5", 2), ("13x+77=272", 9), ("x+0=1", 1), ("7x+20=90", 3)]]
    judge_in = [chat(tok, shots + c) for c in checks]

    def run():
        greedy = backend.generate(prompts, 1, 0.0, 1.0, 0, 8, seed=3)
        sampled = backend.generate(prompts, 3, 1.0, 0.95, 0, 8, seed=3)
        judged = backend.judge(judge_in, r"[0-9x=;*+|]{0,12}:[1-5]", [1, 2, 3, 4, 5], 0.0, 16, seed=0)
        fast = backend.score_next([x + ":" for x in judge_in], [1, 2, 3, 4, 5], 0.0, 0)
        return greedy, sampled, judged, fast

    shared = run()
    monkeypatch.setattr(hf, "SHARED_PREFIX_MIN", 10**9)
    full = run()
    for ours, plain in zip(shared[:2], full[:2]):
        assert [[c.text for c in row] for row in ours] == [[c.text for c in row] for row in plain]
        assert [c.logprob for row in ours for c in row] == pytest.approx([c.logprob for row in plain for c in row],
                                                                         abs=1e-4)
    assert [j.raw for j in shared[2]] == [j.raw for j in full[2]]
    assert [j.expected for j in shared[2]] == pytest.approx([j.expected for j in full[2]], abs=1e-4)
    assert [j.expected for j in shared[3]] == pytest.approx([j.expected for j in full[3]], abs=1e-4)
