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
    assert ours == [plain[i] for i in range(len(prompts))]
    if temperature > 0:
        assert any(len(set(s)) > 1 for s in ours)  # real sampling: the K differ
