"""The GPU check for `+experiment=llama3_8b`, with nothing downloaded: an 8B-shaped model with random weights.

    python benchmarks/gpu_check_llama3_8b.py OUT [--prompts 256] [key=value ...]   (one GPU, ~10 minutes)

1. OUT/model: Llama 3 8B's shapes (config.json written here: 32 layers, width 4096, 8 KV heads, a 128,256-token
   vocabulary) and a stand-in tokenizer of the same vocabulary size (printable characters and their 2- and 3-character
   merges, Llama 3's chat markers), no weights: vLLM loads it with `load_format=dummy`, the trainer with
   `model.init=random`. Prompts (synthetic requests of 200-600 characters) and preference pairs as JSONL.
2. Bare vLLM on the same sampling requests (the experiment's K, temperature, top-p and max_new_tokens), in its own
   process: the baseline's tokens/s.
3. One iteration of the loop (`+experiment=llama3_8b`, its K, lengths, batch sizes and sleep mode; `--prompts`
   prompts), in its own process, GPU memory polled throughout: sample -> judge -> select -> LoRA-SFT -> evaluate.
4. Prints our sampling tokens/s against bare vLLM's (target: within 10%), the peak GPU memory against the dry-run
   plan's estimate, and the seconds per stage; writes OUT/gpu_check.json.

Without a CUDA device it runs as far as it can (the stand-in model, the data, the composed config and the dry-run plan)
and stops with exit code 2, saying so.
"""

from __future__ import annotations

import itertools
import json
import random
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

LLAMA3_8B = {  # meta-llama/Meta-Llama-3-8B-Instruct's config.json, the shapes that set speed and memory
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128009,
}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
                 "<|end_header_id|>\n\n{% endif %}")
WORDS = ("answer explain model data train judge score prompt write short story list three reasons about how why "
         "the a of to in and for with on is are be it this that summary plan code function test error value").split()


def standin_tokenizer(vocab_size: int = LLAMA3_8B["vocab_size"]):
    """A BPE tokenizer of exactly `vocab_size` tokens: the printable characters, their 2-character merges,
    3-character merges up to id 128,000, then Llama 3's chat markers and reserved special tokens up to the size, as
    Llama 3 lays them out."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = list(string.printable[:95]) + ["\n", "\t"]
    base = string.printable[:95]
    n_merged = LLAMA3_8B["bos_token_id"] - len(chars)  # regular tokens fill the ids below the chat markers
    pairs = ["".join(p) for p in itertools.product(base, repeat=2)]
    triples = ("".join(p) for p in itertools.product(base, repeat=3))
    merged = pairs + list(itertools.islice(triples, n_merged - len(pairs)))
    vocab = {t: i for i, t in enumerate(chars + merged)}
    merges = [(t[0], t[1]) if len(t) == 2 else (t[:2], t[2]) for t in merged]
    fill = [f"<|reserved_{i}|>" for i in range(vocab_size - len(vocab) - len(SPECIALS))]  # after the specials
    vocab.update({t: len(vocab) + i for i, t in enumerate(SPECIALS)})
    vocab.update({t: len(vocab) + i for i, t in enumerate(fill)})
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=None, fuse_unk=False))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS + fill)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>", chat_template=CHAT_TEMPLATE, model_max_length=8192)


def write_model(out: Path) -> Path:
    """OUT: config.json, generation_config.json and the tokenizer; no weights (load_format=dummy, init=random)."""
    tok = standin_tokenizer()
    assert len(tok) == LLAMA3_8B["vocab_size"], len(tok)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    cfg = {**LLAMA3_8B, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": tok.bos_token_id,
                                                           "eos_token_id": tok.eos_token_id}))
    return out


def request(rng: random.Random) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 110)))
    return f"Request {rng.randrange(10**6)}: {words}."


def write_data(out: Path, n_train: int, n_eval: int, n_pairs: int) -> dict[str, Path]:
    rng = random.Random(0)
    files = {"train": out / "train.jsonl", "eval": out / "eval.jsonl", "prefs": out / "preferences.jsonl"}
    out.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("eval", n_eval)):
        files[name].write_text("".join(json.dumps({"prompt": request(rng)}) + "\n" for _ in range(n)))
    files["prefs"].write_text("".join(json.dumps({"prompt": request(rng), "chosen": request(rng),
                                                  "rejected": request(rng)}) + "\n" for _ in range(n_pairs)))
    return files


def overrides(model: Path, files: dict[str, Path], prompts: int, extra: list[str]) -> list[str]:
    return ["+experiment=llama3_8b", f"model.path={model}", "model.init=random",
            "+vllm.engine_kwargs.load_format=dummy",
            "data=prompts", f"data.train_prompts={files['train']}", f"data.eval_prompts={files['eval']}",
            f"data.prompts_per_iteration={prompts}", f"eval.preferences={files['prefs']}", "eval.preferences_n=64",
            "iterations=1", "tracking.mode=disabled", *extra]


BARE = r"""
import json, sys, time
from omegaconf import OmegaConf
from vllm import LLM, SamplingParams
spec = json.loads(sys.argv[1]); c = OmegaConf.create(spec["config"])
llm = LLM(model=spec["model"], load_format="dummy", dtype="bfloat16", seed=0, enable_prefix_caching=True,
          gpu_memory_utilization=c.vllm.gpu_memory_utilization, max_model_len=c.vllm.max_model_len)
tok = llm.get_tokenizer()
prompts = [tok.apply_chat_template([{"role": "user", "content": json.loads(l)["prompt"]}], tokenize=False,
                                   add_generation_prompt=True) for l in open(spec["train"])][: spec["n"]]
params = SamplingParams(n=c.sampling.k, temperature=c.sampling.temperature, top_p=c.sampling.top_p,
                        max_tokens=c.sampling.max_new_tokens, seed=0)
llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up
t0 = time.time()
outs = llm.generate(prompts, params, use_tqdm=False)
s = time.time() - t0
tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
print("BARE " + json.dumps({"seconds": s, "tokens": tokens, "tokens_per_s": tokens / s}))
"""


class GPUMemory(threading.Thread):
    """The most GPU memory in use (nvidia-smi, every process) while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            self.peak_mib = max([self.peak_mib, *(int(x) for x in out if x.isdigit())])


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 1
    out, rest = Path(argv[0]).resolve(), argv[1:]
    prompts = int(rest[rest.index("--prompts") + 1]) if "--prompts" in rest else 256
    extra = [a for i, a in enumerate(rest) if a != "--prompts" and (i == 0 or rest[i - 1] != "--prompts")]
    t0 = time.time()
    model = write_model(out / "model")
    files = write_data(out / "data", prompts, 64, 64)
    args = overrides(model, files, prompts, extra)
    print(f"stand-in model and data in {time.time() - t0:.0f} s: {model}", flush=True)
    plan = subprocess.run([sys.executable, "-m", "selfreward", *args, "dry_run=true"], capture_output=True, text=True)
    print(plan.stdout + plan.stderr, flush=True)
    if plan.returncode:
        return plan.returncode
    import torch

    if not torch.cuda.is_available():
        print("gpu_check_llama3_8b: no CUDA device here. Done so far: the 8B-shaped stand-in model and tokenizer, "
              "the data and the composed config (its plan above). The rest (bare vLLM, one iteration of the loop) "
              "needs a GPU with vLLM installed (pip install -e '.[vllm]').", file=sys.stderr)
        return 2
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from selfreward.config import register

    register()
    with initialize_config_module("selfreward.conf", version_base=None):
        cfg = compose("config", overrides=[a for a in args if not a.startswith("+vllm")])
    spec = {"config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": str(model),
            "train": str(files["train"]), "n": prompts}
    bare = subprocess.run([sys.executable, "-c", BARE, json.dumps(spec)], capture_output=True, text=True)
    line = next((x for x in bare.stdout.splitlines() if x.startswith("BARE ")), None)
    if line is None:
        print(bare.stdout[-3000:] + bare.stderr[-3000:], file=sys.stderr)
        return 1
    baseline = json.loads(line[5:])
    memory = GPUMemory()
    memory.start()
    run_dir = out / "run"
    t1 = time.time()
    loop = subprocess.run([sys.executable, "-m", "selfreward", *args, f"hydra.run.dir={run_dir}"])
    memory.stop.set()
    if loop.returncode:
        return loop.returncode
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(x) for x in (run_dir / "iter_001" / "candidates.jsonl").read_text().splitlines()]
    tokens = sum(len(tok(r["text"], add_special_tokens=False).input_ids) for r in rows)
    metrics = json.loads((run_dir / "iter_001" / "metrics.json").read_text())
    ours = tokens / metrics["time/sample_s"]
    stages = {k[5:]: round(v, 1) for k, v in metrics.items() if k.startswith("time/")}
    report = {"gpu": torch.cuda.get_device_name(), "prompts": prompts, "k": cfg.sampling.k,
              "bare_vllm_tokens_per_s": round(baseline["tokens_per_s"]), "ours_tokens_per_s": round(ours),
              "ours_vs_bare": round(ours / baseline["tokens_per_s"], 3),
              "peak_gpu_gib": round(memory.peak_mib / 1024, 1), "loop_s": round(time.time() - t1), "stages_s": stages}
    plan_lines = [x for x in plan.stdout.splitlines() if "GiB" in x]
    print(json.dumps(report, indent=2))
    print("the dry-run plan's estimates:\n" + "\n".join(plan_lines))
    (out / "gpu_check.json").write_text(json.dumps({**report, "plan": plan_lines}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
