"""The report's tiny-transformer section: run every SFT method x seed, write CSV + figures, and
return a Markdown section whose "does the claim reproduce" paragraphs are computed from the data.

Running (``run_all``), analysis (pure functions of DataFrames: ``summary_table``, ``compare``,
``claims``) and plotting (``plot_*``) are kept apart. Entry point for the report:
:func:`run_transformer_section`; standalone: ``python -m toybench.tiny.scale --help``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: writing PNGs never touches the user's backend
from tqdm.auto import tqdm

from toybench.analysis import markdown_table
from toybench.methods import Method
from toybench.tiny.config import TinyConfig, quick_config
from toybench.tiny.evaluate import pass_ks
from toybench.tiny.pipeline import prepare, run_seeds

__all__ = ["run_all", "summary_table", "compare", "decide", "claims", "run_transformer_section"]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def run_all(
    cfg: TinyConfig, cache_dir: Path | None = None, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every (method, seed) pipeline; per method the seeds run as one stacked model unless
    ``cfg.vectorise_seeds`` is False. Returns ``(records, summary, info)`` DataFrames."""
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    t0 = time.perf_counter()
    setup = prepare(cfg, cache_dir=cache_dir, progress=progress)
    t_base = time.perf_counter() - t0
    by_run = {}
    for method in tqdm(cfg.methods, desc="transformer scale", disable=not progress):
        results = run_seeds(setup, method, range(cfg.seeds), vectorise=cfg.vectorise_seeds)
        by_run |= {(method, seed): res for seed, res in enumerate(results)}
    records, rows = [], []
    for seed in range(cfg.seeds):  # seed-major, as the loop always wrote them
        for method in cfg.methods:
            rec, summ = by_run[(method, seed)]
            records += rec
            rows.append(summ)
    info = {
        "base": setup.base_info,
        "base_seconds": t_base,
        "total_seconds": time.perf_counter() - t0,
        "n_sft_demos": len(setup.sft_data),
        "n_heldout_demos": len(setup.heldout),
        "splits": {k: len(v) for k, v in setup.splits.items()},
    }
    df = pd.DataFrame(records)
    df.insert(0, "scale", "transformer")
    return df, pd.DataFrame(rows), info


# ---------------------------------------------------------------------------------------------
# Analysis (pure functions of the summary DataFrame)
# ---------------------------------------------------------------------------------------------
def _mean_se(x: pd.Series) -> tuple[float, float]:
    x = x.dropna()
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def summary_table(summary: pd.DataFrame, columns: dict[str, str]) -> str:
    """Markdown table: one row per method, ``mean ± s.e.`` over seeds of each column."""

    def cell(x: pd.Series) -> str:
        mu, se = _mean_se(x)
        return f"{mu:.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}")

    methods = list(dict.fromkeys(summary["method"]))
    rows = [[m, *(cell(summary.loc[summary["method"] == m, c]) for c in columns)] for m in methods]
    return markdown_table(pd.DataFrame(rows, columns=["method", *columns.values()]))


@dataclass(frozen=True)
class Comparison:
    """Difference of means ``a - b`` of one column, its standard error and the verdict."""

    diff: float
    se: float
    verdict: str  # "higher" | "lower" | "within noise"


def compare(summary: pd.DataFrame, a: str, b: str, column: str, z: float = 2.0) -> Comparison:
    """``mean_a - mean_b`` of ``column`` over seeds; "higher"/"lower" when beyond ``z`` s.e."""
    ma, sa = _mean_se(summary.loc[summary["method"] == a, column])
    mb, sb = _mean_se(summary.loc[summary["method"] == b, column])
    d = ma - mb
    se = math.sqrt((0 if math.isnan(sa) else sa**2) + (0 if math.isnan(sb) else sb**2))
    if se == 0 or math.isnan(se):
        verdict = "higher" if d > 0 else "lower" if d < 0 else "within noise"
    else:
        verdict = "higher" if d > z * se else "lower" if d < -z * se else "within noise"
    return Comparison(d, se, verdict)


def _find(methods: list[str], kind: str) -> str | None:
    return next((m for m in methods if Method.parse(m).kind == kind), None)


def _fmt(c: Comparison) -> str:
    """``diff ± se (verdict)``, as every claim paragraph quotes a comparison."""
    return f"{c.diff:+.3f} ± {c.se:.3f} ({c.verdict})"


def decide(pairs: list[tuple[Comparison, str]]) -> bool | None:
    """Verdict of a claim made of comparisons with expected outcomes ``higher | lower | not higher |
    not lower``: True if every one holds, False if any is contradicted beyond noise, else None."""
    holds = {"higher": {"higher"}, "lower": {"lower"}, "not higher": {"lower", "within noise"},
             "not lower": {"higher", "within noise"}}  # fmt: skip
    against = {"higher": "lower", "lower": "higher", "not higher": "higher", "not lower": "lower"}
    if any(c.verdict == against[e] for c, e in pairs):
        return False
    return True if all(c.verdict in holds[e] for c, e in pairs) else None


def _sign_test(mu: float, se: float, expected: str) -> bool | None:
    z = mu / se if se > 0 else (math.inf if mu > 0 else -math.inf if mu < 0 else 0.0)
    if math.isnan(z):
        return None
    up = z > 2
    down = z < -2
    if expected == "higher":
        return True if up else False if down else None
    return True if down else False if up else None


def claims(summary: pd.DataFrame, k_max: int) -> list[str]:
    """One paragraph per comparison with the papers' claims, decided from the data."""
    methods = list(dict.fromkeys(summary["method"]))
    kk = f"pass@{k_max}"
    sft = _find(methods, "sft")
    if sft is None:
        return ["No `sft` run: no comparison with the papers' claims is possible."]
    method_claims = (
        (_find(methods, "gift"), _claim_gift),
        (_find(methods, "curio"), _claim_curio),
        (next((m for m in methods if m.startswith("pear_")), None), _claim_pear),
        (_find(methods, "entropy_sft"), _claim_entropy_sft),
    )
    out = [claim(summary, m, sft, kk) for m, claim in method_claims if m]
    if "none" in methods:
        out.append(_claim_sft_helps_rl(summary, methods))
    out += [_claim_sft_then_rl(summary, sft), _claim_rl_then_sft(summary, sft)]
    ranking = _claim_ranking(summary, kk)
    return out + ([ranking] if ranking else [])


def _says(ok: bool | None) -> str:
    if ok is None:
        return "is **inconclusive** (differences within noise)"
    return "**reproduces**" if ok else "**does not reproduce**"


def _claim_gift(summary: pd.DataFrame, gift: str, sft: str, kk: str) -> str:
    a, b, c = (compare(summary, gift, sft, col) for col in ("sft_pass@1", f"sft_{kk}", "rl_pass@1"))
    return (
        f"*GIFT* ({gift} vs {sft}; claim: a better RL start, with higher pass@k before RL and higher "
        f"pass@1 after RL). Before RL {kk} {_fmt(b)}; after GRPO pass@1 {_fmt(c)}. "
        f"The claim {_says(decide([(b, 'higher'), (c, 'higher')]))} at this scale. "
        f"Side observation of the paper, pass@1 before RL lower than SFT's: {_fmt(a)}, "
        f"which {_says(decide([(a, 'lower')]))}."
    )


def _claim_curio(summary: pd.DataFrame, curio: str, sft: str, kk: str) -> str:
    a, c = (compare(summary, curio, sft, col) for col in ("sft_pass@1", "rl_pass@1"))
    ok = decide([(a, "higher"), (c, "higher")])
    return (
        f"*CurioSFT* ({curio} vs {sft}; claim: better after SFT and after GRPO). pass@1 after SFT "
        f"{_fmt(a)}, after GRPO {_fmt(c)}. The claim {_says(ok)}."
    )


def _claim_pear(summary: pd.DataFrame, pear: str, sft: str, kk: str) -> str:
    c, a = (compare(summary, pear, sft, col) for col in (f"rl_{kk}", "sft_pass@1"))
    return (
        f"*PEAR* ({pear} vs {sft}; claim: higher pass@k after RL). {kk} after GRPO {_fmt(c)}; "
        f"pass@1 after SFT {_fmt(a)}. The claim {_says(decide([(c, 'higher')]))}."
    )


def _claim_entropy_sft(summary: pd.DataFrame, ent: str, sft: str, kk: str) -> str:
    h, d, v = (compare(summary, ent, sft, col) for col in ("sft_entropy", "sft_distinct", "sft_valid"))
    ok = decide([(h, "higher"), (d, "not higher")])
    return (
        f"*Entropy-SFT failure mode* ({ent} vs {sft}; claim: entropy rises without more distinct "
        f"correct solutions). After SFT: entropy {_fmt(h)}, distinct correct per puzzle {_fmt(d)}, "
        f"well-formed fraction {_fmt(v)}. The claim {_says(ok)}."
    )


def _claim_sft_helps_rl(summary: pd.DataFrame, methods: list[str]) -> str:
    vs = {m: compare(summary, m, "none", "rl_pass@1") for m in methods if m != "none"}
    better = [m for m, c in vs.items() if c.verdict == "higher"]
    worse = [m for m, c in vs.items() if c.verdict == "lower"]
    by_rl = summary.groupby("method")["rl_pass@1"].mean().sort_values(ascending=False)
    return (
        "*Does SFT on the expert help the RL stage here?* pass@1 after GRPO, ranked: "
        + ", ".join(f"{m} {v:.3f}" for m, v in by_rl.items())
        + f". Better than GRPO from the base (`none`): {', '.join(better) or 'no method'}; worse: "
        f"{', '.join(worse) or 'no method'}."
    )


def _stage_change(summary: pd.DataFrame, sft: str, column: str, expected: str) -> tuple[str, str]:
    """``sft``'s mean change of ``column`` (``mu ± se``) and "k of n" methods whose mean change has
    the ``expected`` sign, with the verdict of the sign test appended to the second."""
    mu, se = _mean_se(summary.loc[summary["method"] == sft, column])
    all_mu = summary.groupby("method")[column].mean()
    moved = int((all_mu > 0).sum() if expected == "higher" else (all_mu < 0).sum())
    return (
        f"{mu:+.3f} ± {se:.3f}",
        f"{moved} of {len(all_mu)} methods. The claim {_says(_sign_test(mu, se, expected))}.",
    )


def _claim_sft_then_rl(summary: pd.DataFrame, sft: str) -> str:
    change, tally = _stage_change(summary, sft, "rl_delta_sft_loss", "higher")
    return (
        f"*Non-decoupling, SFT then RL* (claim: the SFT loss on held-out expert data rises during RL). "
        f"For {sft}: change {change} nats/token; it rises for {tally}"
    )


def _claim_rl_then_sft(summary: pd.DataFrame, sft: str) -> str:
    change, tally = _stage_change(summary, sft, "post_sft_delta_reward", "lower")
    return (
        f"*Non-decoupling, RL then SFT* (claim: reward falls during a further SFT stage). For {sft}: "
        f"pass@1 change {change}; it falls for {tally}"
    )


def _claim_ranking(summary: pd.DataFrame, kk: str) -> str | None:
    """PEAR's thesis across methods (None with fewer than three methods)."""
    by = summary.groupby("method")[["sft_pass@1", f"rl_{kk}"]].mean()
    if len(by) < 3:
        return None
    if by["sft_pass@1"].nunique() == 1 or by[f"rl_{kk}"].nunique() == 1:
        return "*A stronger SFT checkpoint is not always a better RL start*: undecidable, all ties."
    rho = by["sft_pass@1"].rank().corr(by[f"rl_{kk}"].rank())
    best_sft, best_rl = by["sft_pass@1"].idxmax(), by[f"rl_{kk}"].idxmax()
    return (
        f"*A stronger SFT checkpoint is not always a better RL start* (PEAR's thesis). Rank correlation "
        f"across methods between pass@1 after SFT and {kk} after GRPO: {rho:+.2f}; best after SFT: "
        f"{best_sft}, best after GRPO: {best_rl}. "
        + (
            "Consistent with the thesis."
            if best_sft != best_rl
            else "Not seen here: the same method wins both."
        )
    )


# ---------------------------------------------------------------------------------------------
# Plotting
# ---------------------------------------------------------------------------------------------
def plot_passk(summary: pd.DataFrame, ks: list[int], path: Path) -> None:
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, stage in zip(axes, ("sft", "rl")):
        for m, sub in summary.groupby("method", sort=False):
            ax.plot(ks, [sub[f"{stage}_pass@{k}"].mean() for k in ks], marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_title("after SFT" if stage == "sft" else "after SFT + GRPO")
    axes[0].set_ylabel("unbiased pass@k (eval puzzles)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_curves(records: pd.DataFrame, stage: str, path: Path, title: str) -> None:
    tr = records[(records["stage"] == stage) & records["eval_pass1"].notna()]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for m, sub in tr.groupby("method", sort=False):
        g = sub.groupby("step")
        axes[0].plot(g["eval_pass1"].mean(), marker=".", label=m)
        axes[1].plot(g["heldout_sft_loss"].mean(), marker=".", label=m)
    axes[0].set_ylabel("pass@1 on eval puzzles")
    axes[1].set_ylabel("SFT loss on held-out expert data (nats/token)")
    for ax in axes:
        ax.set_xlabel(f"{title} step")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Report section
# ---------------------------------------------------------------------------------------------
def run_transformer_section(
    out_dir: Path,
    quick: bool,
    seeds: int,
    cfg: TinyConfig | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[str, pd.DataFrame]:
    """Run the tiny-transformer scale, write its CSVs/PNGs into ``out_dir``, return (Markdown, records)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg is None:
        cfg = quick_config(seeds=seeds) if quick else TinyConfig(seeds=seeds)
    records, summary, info = run_all(cfg, cache_dir=cache_dir, progress=progress)
    records.to_csv(out_dir / "transformer_records.csv", index=False)
    summary.to_csv(out_dir / "transformer_summary.csv", index=False)
    (out_dir / "transformer_config.json").write_text(
        json.dumps({"config": dataclasses.asdict(cfg), "info": info}, indent=2, default=str)
    )
    ks = pass_ks(cfg.eval_samples)
    plot_passk(summary, ks, out_dir / "transformer_passk.png")
    plot_curves(records, "rl", out_dir / "transformer_rl.png", "GRPO")
    plot_curves(records, "post_sft", out_dir / "transformer_post_sft.png", "further SFT after GRPO")
    return _section_markdown(cfg, summary, info, ks[-1]), records


def _section_markdown(cfg: TinyConfig, summary: pd.DataFrame, info: dict, kmax: int) -> str:
    """The section's Markdown: set-up paragraph, the two summary tables, the figures and the claims."""
    headline = summary_table(
        summary,
        {
            "sft_pass@1": "pass@1 after SFT",
            f"sft_pass@{kmax}": f"pass@{kmax} after SFT",
            "sft_entropy": "entropy after SFT",
            "rl_pass@1": "pass@1 after GRPO",
            f"rl_pass@{kmax}": f"pass@{kmax} after GRPO",
            "rl_distinct": "distinct correct after GRPO",
        },
    )
    detail = summary_table(
        summary,
        {
            "sft_pass1_expert": "SFT pass@1, expert-solvable",
            "sft_pass1_other": "SFT pass@1, other",
            "rl_pass1_expert": "GRPO pass@1, expert-solvable",
            "rl_pass1_other": "GRPO pass@1, other",
            "sft_distinct": "distinct correct after SFT",
            "sft_kl_base": "KL to base after SFT",
            "rl_delta_sft_loss": "Δ held-out SFT loss during GRPO",
            "post_sft_delta_reward": "Δ pass@1 during further SFT",
        },
    )
    s = info["splits"]
    md = [
        "## Tiny-transformer scale",
        "",
        f"A {cfg.n_layer}-layer, {cfg.n_embd}-wide causal transformer on make-target puzzles "
        f"({cfg.n_numbers} numbers in 1..{cfg.max_number}, targets 0..{cfg.max_target}). The base model "
        f"was pretrained on {cfg.pretrain_texts} random valid expressions ({cfg.pretrain_steps} steps; "
        f"{'read from the cache' if info['base']['cached'] else 'trained now'}). SFT uses the expert's "
        f"{info['n_sft_demos']} demonstrations (left-to-right folds in the given order with + - *) on "
        f"{s['sft']} SFT puzzles; GRPO runs {cfg.rl_steps} steps on {s['rl']} disjoint RL puzzles; "
        f"evaluation draws {cfg.eval_samples} samples on each of {s['eval']} held-out puzzles "
        f"(unbiased pass@k). "
        f"{cfg.seeds} seeds (mean ± s.e.); `none` is GRPO from the base. Wall time "
        f"{info['total_seconds']:.0f} s.",
        "",
        headline,
        "",
        "Where the gains come from (expert-solvable puzzles vs puzzles that need another strategy), "
        "and the decoupling measurements:",
        "",
        detail,
        "",
        "![pass@k](transformer_passk.png)",
        "![GRPO curves](transformer_rl.png)",
        "![further SFT](transformer_post_sft.png)",
        "",
        "### Does the claim reproduce at this scale?",
        "",
        "Verdicts use differences of seed means beyond 2 standard errors.",
        "",
    ]
    md += [f"- {c}" for c in claims(summary, kmax)]
    return "\n".join(md) + "\n"


@dataclass(frozen=True)
class SectionArgs:
    """Command line of the standalone entry (the report CLI calls :func:`run_transformer_section`)."""

    out: Path = Path("out/transformer")
    """output folder (Markdown, CSVs, PNGs)."""
    quick: bool = False
    """seconds-long settings (``quick_config``); ``--cfg.*`` options are then ignored."""
    seeds: int = 5
    """training seeds."""
    cfg: TinyConfig = TinyConfig()
    """every knob of the scale (``--cfg.rl-steps 100``, ``--cfg.methods sft gift@1 gift@10``, ...)."""


def main(argv: list[str] | None = None) -> None:
    """Standalone entry: ``python -m toybench.tiny.scale --out out/transformer [--quick]``."""
    import tyro

    args = tyro.cli(SectionArgs, args=argv)
    cfg = None if args.quick else dataclasses.replace(args.cfg, seeds=args.seeds)
    md, _ = run_transformer_section(args.out, args.quick, args.seeds, cfg=cfg)
    (args.out / "transformer.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
