import pytest
import torch

from selfreward.backends.hf import HFBackend
from selfreward.prompting import chat


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_samples_what_plain_generate_samples(tiny_model, temperature):
    """K samples from one prefill per prompt are the samples transformers' own `num_return_sequences` gives
    under the same seed, left padding included (prompts of different lengths share a batch)."""
    model, tok = tiny_model
    prompts = [chat(tok, p) for p in ["2x+1=5", "13x+77=272", "x+0=1", "7x+20=90", "3x+3=117"]]
    backend = HFBackend(model, tok, progress=False)
    ours = backend.generate(prompts, 4, temperature, 0.95, 0, 8, seed=11, batch_size=64)

    torch.manual_seed(11)  # one batch: generate seeds it with seed + 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    enc = backend._encode([prompts[i] for i in order])
    n = 4 if temperature > 0 else 1  # transformers refuses several greedy returns: they would all be equal
    seqs = model.generate(**enc, num_return_sequences=n, **backend._gen_kwargs(temperature, 0.95, 0, 8))
    texts = [t for t in tok.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
             for _ in range(4 // n)]
    plain = {i: texts[j * 4 : (j + 1) * 4] for j, i in enumerate(order)}
    assert [[c.text for c in comps] for comps in ours] == [plain[i] for i in range(len(prompts))]
    assert all(c.seed == 11 for comps in ours for c in comps)  # one batch: every completion drawn under seed + 0
    if temperature > 0:
        assert any(len({c.text for c in s}) > 1 for s in ours)  # real sampling: the K differ


def test_sampling_pass_log_probs_match_teacher_forcing():
    """The log-probs each completion carries, read off generate's own logits, are the teacher-forced ones
    (completions that end with EOS: the shipped seed's all do), so the sampling stage needs no second pass."""
    from selfreward.backends.hf import load
    from selfreward.tasks.recipe import SeedRecipe
    from selfreward.tasks.seed import ensure_seed

    model, tok = load(str(ensure_seed(SeedRecipe())), device="cpu", dtype="float32")
    prompts = [chat(tok, p) for p in ["2x+1=5", "13x+77=272", "7x+20=90"]]
    backend = HFBackend(model, tok, progress=False)
    out = backend.generate(prompts, 3, 1.0, 0.95, 0, 40, seed=5)
    flat_in = [p for p, comps in zip(prompts, out) for _ in comps]
    fast = [(c.logprob, c.entropy) for comps in out for c in comps]
    slow = backend.logprob(flat_in, [c.text for comps in out for c in comps])
    assert [a for a, _ in fast] == pytest.approx([a for a, _ in slow], abs=1e-4)
    assert [e for _, e in fast] == pytest.approx([e for _, e in slow], abs=1e-4)
    assert all(a < 0 for a, _ in fast)


@pytest.mark.parametrize("reserve", [0, 3, 40])
def test_growing_kv_cache_decodes_what_the_dynamic_cache_decodes(tiny_model, reserve):
    """The preallocated cache (no per-token concatenation) gives generate the same logits and tokens as transformers'
    DynamicCache, whether its reserve is too small (it doubles) or enough; the keys it hands attention are views of
    one buffer."""
    from selfreward.backends.hf import GrowingKVLayer, cache_kwarg, growing_cache

    model, tok = tiny_model
    backend = HFBackend(model, tok, progress=False)
    enc = backend._encode([chat(tok, p) for p in ["2x+1=5", "13x+77=272", "x+0=1"]])
    kw = dict(backend._gen_kwargs(0.0, 1.0, 0, 12), min_new_tokens=12, output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        plain = model.generate(**enc, **kw)
        cache = growing_cache(model, reserve)
        ours = model.generate(**enc, **{cache_kwarg(): cache}, **kw)
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.scores, plain.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingKVLayer)
    assert layer.keys.shape[-2] == enc["input_ids"].shape[1] + 11  # the last token is never fed back
    assert layer.keys.data_ptr() == layer.buffer[0].data_ptr()
    assert layer.buffer[0].shape[-2] >= layer.keys.shape[-2]
