"""analysis/compare.py on hand-made run directories."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_run(d: Path, k: int, temp: float, accs: list[float]):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- sampling.k={k}\n- sampling.temperature={temp}\n")
    rows = [{"iteration": i, "eval/accuracy": a, "eval/greedy_accuracy": a, "diversity/answer_entropy": 1 - a}
            for i, a in enumerate(accs)]
    (d / "summary.json").write_text(json.dumps({"iterations": rows, "alerts": []}))


def test_compare_writes_table_and_plots(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "sampling.k=2,sampling.temperature=0.7", 2, 0.7, [0.4, 0.5])
    make_run(sweep / "sampling.k=4,sampling.temperature=1.0", 4, 1.0, [0.4, 0.6])
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "analysis" / "compare.py"), str(sweep), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| run | sampling.k | sampling.temperature | last iteration | eval/accuracy")
    assert any("| 4 | 1.0 | 1 | 0.600 |" in line for line in table)
    assert all((out / f"{p}.png").stat().st_size > 5000 for p in ("accuracy", "diversity", "saturation"))
    r = subprocess.run([sys.executable, str(ROOT / "analysis" / "compare.py"), str(sweep), "--out", str(out),
                        "--wandb-report"], capture_output=True, text=True)
    assert r.returncode == 0 and "W&B report skipped" in r.stdout


def test_compare_says_when_there_are_no_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "analysis" / "compare.py"), str(tmp_path), "--out",
                        str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no runs" in r.stderr
