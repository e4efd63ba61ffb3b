"""``base -> SFT(method) -> GRPO -> eval`` for a list of methods: a comparison table and figures.

Outputs (the format of ``toybench report``): ``<out>/results.csv`` (one row per method and stage),
``<out>/report.md`` (the table and figure links), PNG figures, and each stage's own directory
(config, metrics JSONL, checkpoints, final model), named by the method spec (``gift@5``). Every
knob of the two stages is reachable as ``--sft.*`` / ``--grpo.*`` (the same dataclasses as ``llm sft``
and ``llm grpo``). Analysis is pure functions of a DataFrame.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from llm.checkpoint import prepare_out
from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig, resolve, save_config, stage_config
from llm.evaluate import run_eval
from llm.grpo import run_grpo
from llm.sft import run_sft
from llm.tiny import model_path
from toybench.analysis import markdown_table
from toybench.methods import Method


def run_pipeline(cfg: PipelineConfig) -> pd.DataFrame:
    """Run every stage for every method; returns the results table (also written to disk)."""
    cfg = resolve(cfg)
    out = Path(cfg.out)
    prepare_out(cfg)  # --overwrite: the earlier run goes first
    save_config(cfg, out)
    base = model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
    # each stage gets the resolved numbers (``quick`` is never re-applied over --sft.* / --grpo.*)
    ev = dict(n_samples=cfg.n_samples, ks=cfg.ks, overwrite=True)
    rows = [{"method": "base", "stage": "base", **_evaluate(cfg, base, out / "base", ev)}]
    for m in cfg.methods:
        d = out / m
        start = base  # ``none``: GRPO straight from the base model
        if Method.parse(m).kind != "none":
            run_sft(
                stage_config(
                    SFTConfig, cfg, cfg.sft, model=base, out=str(d / "sft"), method=m, resume=cfg.resume
                )
            )
            start = str(d / "sft" / "final")
            rows.append({"method": m, "stage": "sft", **_evaluate(cfg, start, d / "eval_sft", ev)})
        run_grpo(stage_config(GRPOConfig, cfg, cfg.grpo, model=start, out=str(d / "grpo"), resume=cfg.resume))
        rows.append(
            {"method": m, "stage": "grpo", **_evaluate(cfg, str(d / "grpo" / "final"), d / "eval_grpo", ev)}
        )
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    figs = make_figures(out, cfg.methods)
    write_report(out, df, figs)
    return df


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


def write_report(out: Path, df: pd.DataFrame, figs: list[str]) -> Path:
    """``report.md``: the comparison table and the figures."""
    text = ["# LLM pipeline: base -> SFT(method) -> GRPO -> eval", "", comparison_table(df), ""]
    text += [f"![{f}]({f})" for f in figs]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path


__all__ = ["comparison_table", "load_curves", "make_figures", "run_pipeline", "write_report"]
