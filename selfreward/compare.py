"""Compare the runs of a sweep (or any run directories) from their local artifacts; no W&B needed.

    selfreward compare multirun/2026-11-26/12-00-00 --out compare/     (or python analysis/compare.py ...)
    selfreward compare RUN_A RUN_B --out compare/ --wandb-report

Writes one PNG per panel (accuracy, diversity, saturation per iteration; one line per run, labelled by
the swept values), `table.md` (one row per run: swept parameters and final metrics) and `iterations.md` (one row per
run and iteration: accuracy, the judge's ranking, selection precision, collapse, time per stage).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from omegaconf import OmegaConf

PANELS = {
    "accuracy": ["eval/accuracy", "eval/greedy_accuracy"],
    "diversity": ["diversity/distinct_1_all", "diversity/answer_entropy", "diversity/self_bleu"],
    "saturation": ["judge/train_saturation", "judge/auc_within", "judge/pref_accuracy"],
}
COLUMNS = ["eval/accuracy", "eval/greedy_accuracy", "judge/auc_within", "judge/pref_accuracy",
           "select/verified_precision", "select/pair_precision", "sample/accuracy", "diversity/answer_entropy",
           "judge/train_saturation", "time/iteration_s"]


# the per-iteration table (`--iterations`): what says whether the loop helped, and at what cost
ITERATION_COLUMNS = {"eval/accuracy": "eval acc", "eval/greedy_accuracy": "greedy", "judge/auc_within": "auc_within",
                     "judge/pref_accuracy": "pref acc", "sample/accuracy": "sample acc",
                     "select/verified_precision": "verified prec",
                     "select/pair_precision": "pair prec", "diversity/answer_entropy": "answer entropy",
                     "collapse/answer_entropy": "vs it0", "diversity/duplicate_rate": "duplicates",
                     "time/sample_s": "sample s", "time/judge_s": "judge s", "time/train_s": "train s",
                     "time/eval_s": "eval s"}


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for p in paths:
        runs += sorted({s.parent for s in p.rglob("summary.json")}) if not (p / "summary.json").exists() else [p]
    return runs


def label(run: Path) -> tuple[str, dict]:
    """The run's swept values, from Hydra's record of its overrides."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = []
    if overrides_file.exists():
        overrides = [line[2:].strip() for line in overrides_file.read_text().splitlines() if line.startswith("- ")]
    swept = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("hydra."))
    return (", ".join(f"{k}={v}" for k, v in swept.items()) or run.name), swept


def load(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    name, swept = label(run)
    return {"run": run, "name": name, "swept": swept, "rows": summary["iterations"],
            "alerts": summary.get("alerts", [])}


def fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return "-" if v is None else str(v)


def table(runs: list[dict]) -> str:
    params = sorted({k for r in runs for k in r["swept"]})
    head = ["run", *params, "last iteration", *COLUMNS, "alerts"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        last = r["rows"][-1]
        cells = [r["run"].name, *(r["swept"].get(p, "") for p in params), str(last["iteration"]),
                 *(fmt(last.get(c)) for c in COLUMNS), str(len(r["alerts"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def iteration_table(runs: list[dict]) -> str:
    """One row per run and iteration (iteration 0: the starting model, evaluated before training)."""
    head = ["run", "it", *ITERATION_COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        for row in r["rows"]:
            cells = [r["name"], str(row["iteration"]), *(fmt(row.get(c)) for c in ITERATION_COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plots(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for panel, keys in PANELS.items():
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for r in runs:
                pts = [(x["iteration"], x[key]) for x in r["rows"] if isinstance(x.get(key), (int, float))]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=r["name"])
            ax.set_title(key)
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{panel}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def tracked(run: Path) -> tuple[str | None, str, str | None]:
    """(entity, project, W&B run id) of a run: the project from the run's composed config (`.hydra/config.yaml`;
    run.json leaves `tracking` out of the config it hashes), the id from `RUN/wandb_id` (None: never logged)."""
    cfg = run / ".hydra" / "config.yaml"
    tracking = (OmegaConf.load(cfg).get("tracking") or {}) if cfg.exists() else {}
    id_file = run / "wandb_id"
    return (tracking.get("entity"), tracking.get("project", "selfreward"),
            id_file.read_text().strip() if id_file.exists() else None)


def build_report(runs: list[dict], title: str, entity: str | None = None):
    """The W&B report (wandb-workspaces, the `report` extra) comparing `runs`: one run set per project holding
    exactly these runs (by W&B id), a line plot per panel metric against the iteration, and the per-iteration
    table. Built without a login; `wandb_report` saves it."""
    import wandb_workspaces.reports.v2 as wr

    by_project: dict[tuple, list[str]] = {}
    for r in runs:
        run_entity, project, run_id = tracked(r["run"])
        if run_id:
            by_project.setdefault((entity or run_entity or "", project), []).append(run_id)
    if not by_project:
        raise ValueError("none of the runs logged to W&B (no RUN/wandb_id: tracking.mode=disabled?)")
    runsets = [wr.Runset(entity=e, project=p, name=f"{p}: {len(ids)} runs", filters=f"ID in {sorted(ids)!r}")
               for (e, p), ids in by_project.items()]
    e, project = next(iter(by_project))  # the report lives in the first project
    panels = [wr.LinePlot(title=k, x="iteration", y=[k]) for keys in PANELS.values() for k in keys]
    return wr.Report(project=project, entity=e, title=title,
                     description="selfreward compare: accuracy, diversity and the judge per iteration",
                     blocks=[wr.H1(text=title), wr.PanelGrid(runsets=runsets, panels=panels),
                             wr.MarkdownBlock(text=iteration_table(runs))])


def wandb_report(runs: list[dict], title: str) -> str:
    """Build and save the report; needs `pip install selfreward[report]`, `wandb login` and the runs synced."""
    try:
        import wandb
        import wandb_workspaces  # noqa: F401
    except ImportError:
        return "W&B report skipped: install the reports API with `pip install 'selfreward[report]'`."
    if not (wandb.api.api_key if hasattr(wandb, "api") else None):
        return ("W&B report skipped: not logged in. Run `wandb login`, sync the offline runs with "
                "`wandb sync RUN/wandb/offline-run-*`, then rerun with --wandb-report.")
    try:
        report = build_report(runs, title)
    except ValueError as e:
        return f"W&B report skipped: {e}"
    report.save()
    return f"W&B report: {report.url}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="selfreward compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="a sweep directory, or run directories")
    ap.add_argument("--out", type=Path, required=True, help="where the PNGs and table.md go")
    ap.add_argument("--wandb-report", action="store_true", help="also build a W&B report (needs wandb login)")
    args = ap.parse_args(argv)
    runs = [load(r) for r in find_runs(args.paths)]
    if not runs:
        print(f"no runs (no summary.json) under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    md = table(runs)
    (args.out / "table.md").write_text(md)
    per_iteration = iteration_table(runs)
    (args.out / "iterations.md").write_text(per_iteration)
    print(per_iteration)
    written = plots(runs, args.out)
    print(md)
    print("wrote " + ", ".join(str(p) for p in [args.out / "table.md", args.out / "iterations.md", *written]))
    if args.wandb_report:
        print(wandb_report(runs, f"selfreward: {args.paths[0].name}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
