"""analysis/compare.py on hand-made run directories."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_run(d: Path, k: int, temp: float, accs: list[float], project: str | None = None, run_id: str | None = None):
    (d / ".hydra").mkdir(parents=True)
    if project:  # what Hydra and the tracker leave in a run directory
        (d / ".hydra" / "config.yaml").write_text(f"tracking:\n  mode: offline\n  project: {project}\n")
        (d / "wandb_id").write_text(run_id)
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


def test_the_wandb_report_selects_the_runs_and_holds_the_panels_without_a_login(tmp_path):
    """As far as wandb-workspaces goes offline: the report's project (from the runs' composed config, not run.json),
    its run set (exactly the compared runs, by W&B id, as the filter the W&B backend receives), its panels and the
    per-iteration table. Saving needs a login."""
    import pytest

    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from wandb_workspaces import expr

    from selfreward.compare import PANELS, build_report, find_runs, load

    make_run(tmp_path / "a", 2, 0.7, [0.4, 0.5], project="rsft-sweep", run_id="ab12cd34")
    make_run(tmp_path / "b", 4, 1.0, [0.4, 0.6], project="rsft-sweep", run_id="ef56gh78")
    make_run(tmp_path / "c", 8, 1.0, [0.4, 0.7])  # tracking disabled: not in W&B, so not in the run set
    runs = [load(r) for r in find_runs([tmp_path])]
    report = build_report(runs, "k sweep")
    assert report.project == "rsft-sweep" and report.title == "k sweep"
    grid = next(b for b in report.blocks if isinstance(b, wr.PanelGrid))
    (runset,) = grid.runsets
    f = expr.expr_to_filters(runset.filters)
    assert f.op == "IN" and f.key.name == "name" and sorted(f.value) == ["ab12cd34", "ef56gh78"]
    assert [p.y for p in grid.panels] == [[k] for keys in PANELS.values() for k in keys]
    assert all(p.x == "iteration" for p in grid.panels)
    table = next(b for b in report.blocks if isinstance(b, wr.MarkdownBlock)).text
    assert "sampling.k=8" in table and "0.700" in table  # the table covers every compared run
    with pytest.raises(ValueError, match="none of the runs logged to W&B"):
        build_report(runs[2:], "none")
