"""Kill a real run with SIGKILL at several points, resume it, and compare with an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli

ARGS = ["+experiment=tiny", "iterations=2", "train.steps=40", "tracking.mode=disabled"]
# the tiny judge's scores lie within 0.01 of each other: any gap makes a pair
DPO = ARGS + ["train=dpo", "train.epochs=100", "train.steps=60", "selection.pair_margin=0"]


# model.dtype=auto decided by injected probe timings: fp32 clearly faster (as on an AVX2-only CPU), whatever this CPU
FP32 = {"SELFREWARD_DTYPE_PROBE": "fp32=150,bf16=1", "SELFREWARD_CPU_FLAGS": "avx2"}
# timings and flags that would pick bf16 (an AVX512-BF16 CPU at a quiet moment)
BF16 = {"SELFREWARD_DTYPE_PROBE": "fp32=150,bf16=400", "SELFREWARD_CPU_FLAGS": "avx512_bf16"}


def start(run, cache, args=ARGS, env=FP32):
    env = dict(os.environ, SELFREWARD_CACHE=str(cache), **env)
    return subprocess.Popen([sys.executable, "-m", "selfreward", *args, f"hydra.run.dir={run}"], cwd=run.parent,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc, ready, timeout=300):
    t = time.time()
    while not ready():
        assert proc.poll() is None, f"run ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.time() - t < timeout
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def final_state(run):
    out = {}
    for it in (1, 2):
        d = run / f"iter_{it:03d}"
        out[f"selected{it}"] = (d / "selected.jsonl").read_bytes()
        out[f"candidates{it}"] = (d / "candidates.jsonl").read_bytes()
        out[f"adapter{it}"] = (d / "adapter" / "adapter_model.safetensors").read_bytes()
    rows = json.loads((run / "summary.json").read_text())["iterations"]
    out["metrics"] = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("ref") / "run"
    r = run_cli(ARGS, run, cache_dir, env=FP32)
    assert r.returncode == 0, r.stderr[-3000:]
    return final_state(run)


@pytest.mark.parametrize(
    "point, ready",
    [
        ("during sampling", lambda run: (run / "iter_001" / "candidates.shards" / "00000.jsonl").exists()),
        ("just after judging", lambda run: (run / "iter_001" / "judgments.manifest.json").exists()),
        ("during training", lambda run: (run / "iter_002" / "selected.jsonl").exists()),
    ],
)
def test_killed_run_resumes_to_the_same_result(point, ready, tmp_path, cache_dir, reference):
    run = tmp_path / "run"
    proc = start(run, cache_dir)
    kill_when(proc, lambda: ready(run))
    assert not (run / "iter_002" / "metrics.json").exists(), f"killed too late ({point})"
    r = run_cli(ARGS, run, cache_dir, env=FP32)
    assert r.returncode == 0, r.stderr[-3000:]
    assert final_state(run) == reference
    assert not list(run.rglob(".*.tmp-*")) and not list(run.rglob("*.shards"))


def test_resumed_run_keeps_its_recorded_dtype(tmp_path, cache_dir, reference):
    """The run picked fp32 when it started; resumed at a moment whose timings (and flags) would pick bf16, it keeps
    fp32 from run.json and ends byte-identical to the uninterrupted run."""
    run = tmp_path / "run"
    proc = start(run, cache_dir)
    kill_when(proc, lambda: (run / "iter_001" / "candidates.shards" / "00000.jsonl").exists())
    assert json.loads((run / "run.json").read_text())["precision"]["dtype"] == "float32"
    r = run_cli(ARGS, run, cache_dir, env=BF16)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "recorded in run.json" in r.stdout + r.stderr
    assert json.loads((run / "run.json").read_text())["precision"]["dtype"] == "float32"
    assert final_state(run) == reference


def test_run_killed_during_dpo_training_resumes_to_the_same_result(tmp_path_factory, cache_dir):
    ref = tmp_path_factory.mktemp("dpo_ref") / "run"
    r = run_cli(DPO, ref, cache_dir, env=FP32)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path_factory.mktemp("dpo") / "run"
    proc = start(run, cache_dir, DPO)
    kill_when(proc, lambda: (run / "iter_002" / "selected.jsonl").exists())
    assert not (run / "iter_002" / "metrics.json").exists(), "killed too late"
    r = run_cli(DPO, run, cache_dir, env=FP32)
    assert r.returncode == 0, r.stderr[-3000:]
    assert final_state(run) == final_state(ref)
    assert "train/rewards_margin" in final_state(run)["metrics"][-1]


def test_changed_config_is_refused_unless_forced(tmp_path, cache_dir):
    run = tmp_path / "run"
    assert run_cli(ARGS[:1] + ["iterations=1", "tracking.mode=disabled"], run, cache_dir).returncode == 0
    r = run_cli(ARGS[:1] + ["iterations=1", "tracking.mode=disabled", "sampling.k=2"], run, cache_dir)
    assert r.returncode != 0 and "sampling.k: 4 -> 2" in r.stderr and "force_resume=true" in r.stderr
    assert "Traceback" not in r.stderr
    forced = ["iterations=1", "tracking.mode=disabled", "sampling.k=2", "force_resume=true"]
    r = run_cli(ARGS[:1] + forced, run, cache_dir)
    assert r.returncode == 0, r.stderr[-2000:]
