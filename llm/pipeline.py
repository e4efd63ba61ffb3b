"""``base -> SFT(method) -> GRPO -> eval`` for a list of methods: a comparison table and figures.

Outputs (the format of ``toybench report``): ``<out>/results.csv`` (one row per method and stage),
``<out>/report.md`` (the table, the decoupling measurements, time and disk per stage, figure links),
PNG figures, and each stage's own directory (config, metrics JSONL, checkpoints, final model), named
by the method spec (``gift@5``). Every knob of the two stages is reachable as ``--sft.*`` /
``--grpo.*`` (the same dataclasses as ``llm sft`` and ``llm grpo``). Analysis is pure functions of a
DataFrame.

``--seeds N`` (N > 1) runs the whole comparison at seeds ``seed .. seed+N-1``, each under
``<out>/seed-<i>/``; ``results.csv`` gains a ``seed`` column, ``summary.csv`` holds the means and
95% Student-t half-widths over seeds, ``paired.csv`` each method minus the first one paired by seed
(the toy map's statistics, ``toybench.analysis.stats``), ``decoupling.csv`` the T1/T2 measurements
per method and seed; ``report.md`` shows them with intervals.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pandas as pd

from llm.checkpoint import prepare_out
from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig, resolve, save_config, stage_config
from llm.evaluate import run_eval
from llm.grpo import run_grpo
from llm.sft import run_sft
from llm.tiny import model_path
from toybench.analysis import markdown_table
from toybench.analysis.stats import fmt_ci, paired_test, summary
from toybench.methods import Method


def run_pipeline(cfg: PipelineConfig) -> pd.DataFrame:
    """Run every stage for every method (at every seed of ``--seeds``); returns the results table
    (also written to disk with the timing, the decoupling measurements and, for several seeds, the
    intervals)."""
    cfg = resolve(cfg)
    out = Path(cfg.out)
    prepare_out(cfg)  # --overwrite: the earlier run goes first
    save_config(cfg, out)
    if cfg.seeds == 1:
        df, timing = _run_seed(cfg, out)
        df.to_csv(out / "results.csv", index=False)
        figs = make_figures(out, cfg.methods)
        dec = decoupling(out, cfg.methods)
        write_report(out, df, figs, timing=timing, decouple=dec)
        return df
    frames, timings, decs = [], [], []
    for i in range(cfg.seeds):
        sub = out / f"seed-{i}"
        df, timing = _run_seed(dataclasses.replace(cfg, seed=cfg.seed + i), sub)
        frames.append(df.assign(seed=cfg.seed + i))
        timings.append(timing.assign(seed=cfg.seed + i))
        decs.append(decoupling(sub, cfg.methods).assign(seed=cfg.seed + i))
    df, timing, dec = (pd.concat(x, ignore_index=True) for x in (frames, timings, decs))
    df.to_csv(out / "results.csv", index=False)
    summ, pair = seed_summary(df), paired_table(df, cfg.methods)
    summ.to_csv(out / "summary.csv", index=False)
    pair.to_csv(out / "paired.csv", index=False)
    dec.to_csv(out / "decoupling.csv", index=False)
    figs = [f"seed-0/{f}" for f in make_figures(out / "seed-0", cfg.methods)]  # the curves of one seed
    write_report(out, summ, figs, timing=timing, decouple=dec, paired=pair, seeds=cfg.seeds)
    return df


def _timed(rows: list[dict], method: str, stage: str, directory: Path, fn, *args):
    """Run ``fn(*args)``, adding ``method, stage, seconds, disk_bytes`` of ``directory`` to ``rows``."""
    t = time.perf_counter()
    res = fn(*args)
    rows.append(
        {
            "method": method,
            "stage": stage,
            "seconds": time.perf_counter() - t,
            "disk_bytes": disk_bytes(directory),
        }
    )
    return res


def disk_bytes(path: Path) -> int:
    """Bytes ``path`` takes on disk (like ``du``: each hard-linked file counted once)."""
    seen, total = set(), 0
    for f in Path(path).rglob("*") if Path(path).is_dir() else []:
        st = f.lstat()
        if f.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _run_seed(cfg: PipelineConfig, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """base -> SFT(method) -> GRPO -> eval of every method at ``cfg.seed`` under ``out``; returns the
    results (one row per method and stage) and the timing (seconds and disk per stage)."""
    base = model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
    # each stage gets the resolved numbers (``quick`` is never re-applied over --sft.* / --grpo.*)
    ev = dict(n_samples=cfg.n_samples, ks=cfg.ks, overwrite=True)
    timing: list[dict] = []

    def evaluate(method: str, stage: str, model: str, d: Path) -> dict:
        res = _timed(timing, method, f"eval_{stage}", d, _evaluate, cfg, model, d, ev)
        return {"method": method, "stage": stage, **res}

    rows = [evaluate("base", "base", base, out / "base")]
    for m in cfg.methods:
        d = out / m
        start = base  # ``none``: GRPO straight from the base model
        if Method.parse(m).kind != "none":
            sft = stage_config(
                SFTConfig, cfg, cfg.sft, model=base, out=str(d / "sft"), method=m, resume=cfg.resume
            )
            _timed(timing, m, "sft", d / "sft", run_sft, sft)
            start = str(d / "sft" / "final")
            rows.append(evaluate(m, "sft", start, d / "eval_sft"))
        grpo = stage_config(GRPOConfig, cfg, cfg.grpo, model=start, out=str(d / "grpo"), resume=cfg.resume)
        _timed(timing, m, "grpo", d / "grpo", run_grpo, grpo)
        rows.append(evaluate(m, "grpo", str(d / "grpo" / "final"), d / "eval_grpo"))
    return pd.DataFrame(rows), pd.DataFrame(timing)


def _metric_cols(df: pd.DataFrame) -> list[str]:
    return [
        c for c in df.columns if c not in ("method", "stage", "seed") and pd.api.types.is_numeric_dtype(df[c])
    ]


def seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% Student-t half-width (``<metric>_ci``) over seeds of every metric, per method and
    stage (``toybench.analysis.stats.summary``, the toy map's statistics)."""
    return summary(df, _metric_cols(df), ["method", "stage"])


def paired_table(df: pd.DataFrame, methods) -> pd.DataFrame:
    """Each method minus the first of ``methods`` (the reference), per stage and metric, paired by
    seed: mean difference, 95% half-width, paired t-test p and the number of seeds
    (``toybench.analysis.stats.paired_test``)."""
    ref, rows = methods[0], []
    for stage in ("sft", "grpo"):
        d = df[df["stage"] == stage]
        for m in methods[1:]:
            for metric in _metric_cols(df):
                x = d[d["method"] == m].set_index("seed")[metric]
                y = d[d["method"] == ref].set_index("seed")[metric]
                if len(x) and len(y):
                    rows.append(
                        {"stage": stage, "method": m, "vs": ref, "metric": metric, **paired_test(x, y)}
                    )
    return pd.DataFrame(rows, columns=["stage", "method", "vs", "metric", "diff", "ci", "p", "n"])


def decoupling(out: Path, methods) -> pd.DataFrame:
    """The decoupling measurements per method, from the stages' metrics: the held-out expert SFT loss
    at the start and end of GRPO (T1: does RL move the SFT objective?) and the held-out greedy
    reward at the first and last probe of SFT (T2: does SFT move the reward?)."""
    rows = []
    for m in methods:
        row = {"method": m}
        for stage, col, name in (
            ("grpo", "heldout/sft_loss", "grpo_heldout_sft_loss"),
            ("sft", "heldout/reward", "sft_heldout_reward"),
        ):
            c = load_curves(out, [m], stage)
            v = c.dropna(subset=[col])[col].tolist() if col in c else []
            if v:
                row |= {f"{name}_start": v[0], f"{name}_end": v[-1], f"{name}_change": v[-1] - v[0]}
        rows.append(row)
    return pd.DataFrame(rows)


def _evaluate(cfg: PipelineConfig, model: str, out: Path, ev: dict) -> dict:
    """Evaluate ``model`` with the pipeline's evaluation settings into ``out``."""
    return run_eval(stage_config(EvalConfig, cfg, model=model, out=str(out), **ev))


def load_curves(out: Path, methods, stage: str) -> pd.DataFrame:
    """Metrics JSONL of ``stage`` (sft | grpo) of every method as one long DataFrame."""
    frames = []
    for m in methods:
        p = out / m / stage / "metrics.jsonl"
        if p.is_file():
            recs = [json.loads(x) for x in p.read_text().splitlines() if x]
            frames.append(pd.DataFrame(recs).assign(method=m))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def make_figures(out: Path, methods) -> list[str]:
    """PNG figures: GRPO reward and held-out SFT loss vs step; held-out reward during SFT."""
    import matplotlib.pyplot as plt

    names = []
    specs = [
        ("grpo", "grpo/reward", "GRPO reward (train prompts)"),
        ("grpo", "heldout/sft_loss", "held-out SFT loss during GRPO (T1)"),
        ("sft", "heldout/reward", "held-out reward during SFT (T2)"),
        ("sft", "sft/loss", "SFT training loss"),
    ]
    for stage, col, title in specs:
        df = load_curves(out, methods, stage)
        if df.empty or col not in df:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m, g in df.dropna(subset=[col]).groupby("method"):
            ax.plot(g["step"], g[col], marker="o", ms=3, label=m)
        ax.set_xlabel(f"{stage.upper()} step")
        ax.set_ylabel(col)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{stage}_{col.replace('/', '_')}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def comparison_table(df: pd.DataFrame) -> str:
    """Markdown table: one row per (method, stage), metrics as columns."""
    cols = [c for c in df.columns if c not in ("method", "stage")]
    return markdown_table(df[["method", "stage", *cols]], lambda v: v if isinstance(v, str) else f"{v:.4f}")


def summary_table(summ: pd.DataFrame) -> str:
    """Markdown table of :func:`seed_summary`: ``mean ± 95% half-width`` per metric."""
    metrics = [c for c in summ.columns if f"{c}_ci" in summ.columns]
    t = summ[["method", "stage"]].copy()
    for c in metrics:
        t[c] = [fmt_ci(m, h, 4) for m, h in zip(summ[c], summ[f"{c}_ci"])]
    t["seeds"] = summ["n"]
    return markdown_table(t)


def _fmt(v) -> str:
    return v if isinstance(v, str) else f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(
    out: Path,
    df: pd.DataFrame,
    figs: list[str],
    timing: pd.DataFrame | None = None,
    decouple: pd.DataFrame | None = None,
    paired: pd.DataFrame | None = None,
    seeds: int = 1,
) -> Path:
    """``report.md``: the comparison table (one seed: the values; several: means ± 95% intervals over
    seeds and the paired differences to the first method), the decoupling measurements, the time and
    disk of each stage, and the figures."""
    text = ["# LLM pipeline: base -> SFT(method) -> GRPO -> eval", ""]
    if seeds == 1:
        text += [comparison_table(df), ""]
    else:
        text += [f"Means ± 95% Student-t half-widths over {seeds} seeds.", "", summary_table(df), ""]
        if paired is not None and not paired.empty:
            p = paired.assign(diff=[fmt_ci(m, h, 4) for m, h in zip(paired["diff"], paired["ci"])])
            text += [
                "## Paired by seed: method - reference",
                "",
                markdown_table(p.drop(columns="ci"), _fmt),
                "",
            ]
    if decouple is not None and not decouple.empty:
        text += [
            "## Decoupling",
            "",
            "T1: held-out expert SFT loss during GRPO; T2: held-out greedy reward during SFT.",
            "",
        ]
        text += [markdown_table(decouple, _fmt), ""]
    if timing is not None and not timing.empty:
        t = timing.assign(MB=timing["disk_bytes"] / 1e6).drop(columns="disk_bytes")
        text += ["## Time and disk per stage", "", markdown_table(t, _fmt), ""]
    text += [f"![{f}]({f})" for f in figs]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path


__all__ = [
    "comparison_table",
    "decoupling",
    "disk_bytes",
    "load_curves",
    "make_figures",
    "paired_table",
    "run_pipeline",
    "seed_summary",
    "summary_table",
    "write_report",
]
