"""report.md and headline.md from the map frame: tables, verdict lists, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from toybench import analysis, plots
from toybench.analysis import MapAnalysis, analyse_map
from toybench.analysis.exploration import exploration_table
from toybench.report.headline import best_table, headline_markdown, rl_label
from toybench.report.phase import plot_phase


def _cell_label(r) -> str:
    return (
        f"{rl_label(r.rl_algorithm, r.num_generations)}, err {r.wrong_demo_frac:g}, "
        f"mass {r.base_correct_mass:g}, RL {int(r.rl_steps)}"
    )


def selected_table(a: MapAnalysis, setting: str) -> pd.DataFrame:
    """Rows: cells; columns: families; entries: the selected configuration ('selected: ...')."""
    s = a.selected[a.selected["setting"] == setting].copy()
    s["cell"] = [_cell_label(r) for r in s.itertuples()]
    s["config"] = [
        f"{m} (lr {lr:g})" if lr == rl else f"{m} (sft_lr {lr:g}, rl_lr {rl:g})"
        for m, lr, rl in zip(s["method"], s["sft_lr"], s["rl_lr"])
    ]
    t = s.pivot_table(index="cell", columns="family", values="config", aggfunc="first", sort=False)
    return t.reset_index()


def effects_table(a: MapAnalysis, setting: str, metric: str = "J") -> pd.DataFrame:
    """Rows: cell x family; post-RL test mean, effect vs sft and vs none (95% CI, two-sided p before any
    adjustment: the claims' decisions are in the verdict table)."""
    keys = [*analysis.CELL, "family"]
    t = a.test[(a.test["setting"] == setting) & (a.test["stage"] == "rl")]
    means = (
        t.groupby(keys, sort=False)[metric].agg(lambda x: analysis.fmt_ci(*analysis.ci95(x))).reset_index()
    )
    e = a.effects[(a.effects["setting"] == setting) & (a.effects["metric"] == metric)].copy()
    e["text"] = [f"{analysis.fmt_ci(d, h)} (p {p:.2g})" for d, h, p in zip(e["diff"], e["ci"], e["p"])]
    for ref in ("sft", "none"):
        r = e[e["ref"] == ref][[*keys, "text"]].rename(columns={"text": f"vs {ref}"})
        means = means.merge(r, on=keys, how="left")
    means["cell"] = [_cell_label(r) for r in means.itertuples()]
    out = means.rename(columns={"family": "method", metric: f"post-RL {metric} (test)"})
    return out[["cell", "method", f"post-RL {metric} (test)", "vs sft", "vs none"]].fillna("")


CLAIM_TEXT = {
    "a": "The method best after SFT is not the best after RL (PEAR: good SFT is not better SFT)",
    **{k: v[2] for k, v in analysis.MAP_CLAIMS.items()},
}


def grid_text(a: MapAnalysis) -> list[str]:
    """The tuning grid's checks: selections at a grid edge per family, and the stability filter's
    rejections (every selection is listed in selections.csv)."""
    sel = a.selected
    e = sel.groupby("family", sort=False).agg(
        selections=("at_edge", "size"),
        rl_at_edge=("rl_at_edge", "sum"),
        rl_at_end=("rl_at_end", "sum"),
        sft_at_edge=("sft_at_edge", "sum"),
    )
    grids = a.scores.groupby(["setting", "rl_algorithm", "num_generations"], sort=False)["rl_lr"].agg(
        lambda v: ", ".join(f"{x:g}" for x in sorted(v.dropna().unique()))
    )
    rej = a.scores[~a.scores["stable"].astype(bool)]
    lines = [
        f"Selections at an edge of their grid: {int(sel['at_edge'].sum())} of {len(sel)} "
        f"({sel['at_edge'].mean():.0%}): the chosen RL step size (or SFT learning rate) is the smallest or "
        "largest of its family's grid of 3 or more values AND beats the value next to it by more than the "
        f"selection tie, so the optimum may lie beyond the grid. At an end of the grid at all, plateaus "
        f"included: {int(sel['rl_at_end'].sum())} ({sel['rl_at_end'].mean():.0%}). The RL grid was "
        "extended past its edge where selection asked for it (`rl_lr_extensions`); the step sizes run per "
        "map: " + "; ".join(f"`{k[0]}` {rl_label(k[1], k[2])}: {v}" for k, v in grids.items()) + ". "
        "Every selection: `selections.csv`.",
        "",
        analysis.markdown_table(e.reset_index()),
        "",
    ]
    if len(rej):
        r = (
            rej.groupby(
                ["setting", "rl_algorithm", "num_generations", "family", "method", "sft_lr", "rl_lr"],
                dropna=False,
                sort=False,
            )["shift"]
            .agg(["size", "max"])
            .reset_index()
        )
        listed = "; ".join(
            f"`{x.setting}` {rl_label(x.rl_algorithm, x.num_generations)} {x.method} sft_lr {x.sft_lr:g} "
            f"rl_lr {x.rl_lr:g} ({x.size} cells, shift up to {x.max:.3f})"
            for x in r.itertuples()
        )
        lines += [
            f"Stability filter: {len(rej)} of {len(a.scores)} configuration-cells rejected: {listed}.",
            "",
        ]
    else:
        lines += [f"Stability filter: none of {len(a.scores)} configuration-cells rejected.", ""]
    return lines


def _on(df: pd.DataFrame, setting: str) -> str:
    col = df.loc[df["setting"] == setting, "eval_prompts"] if "eval_prompts" in df else pd.Series([])
    return "held-out" if len(col) and (col == "held-out").all() else "rl_train"


def base_competence_text(a: MapAnalysis) -> str:
    """What RL from the base reaches at each base mass: ``none``'s post-RL pass@1 at the longest budget
    (test seeds, averaged over teacher error, which ``none`` never sees)."""
    t = a.test[(a.test["family"] == "none") & (a.test["stage"] == "rl")]
    if not len(t):
        return ""
    t = t[t["rl_steps"] == t["rl_steps"].max()]
    g = t.groupby(["setting", "rl_algorithm", "num_generations", "base_correct_mass"], sort=False)["J"].mean()
    parts = [f"`{s}` {rl_label(a_, G)} mass {m:g}: {j:.3f}" for (s, a_, G, m), j in g.items()]
    return (
        f"Base competence: pass@1 that RL from the base (`none`) reaches after {int(t['rl_steps'].max())} "
        "steps, per setting and base mass on correct answers (test seeds): " + "; ".join(parts) + "."
    )


def diverged_text(df: pd.DataFrame) -> str:
    """The configurations whose run went non-finite (marked in every cell of their setting: the cells
    share one run); selection never picks them."""
    if "diverged" not in df or not df["diverged"].astype(bool).any():
        return "Diverged configurations (non-finite run): none."
    keys = [c for c in ("setting", "rl_algorithm", "num_generations", "method", "sft_lr", "rl_lr") if c in df]
    d = df[df["diverged"].astype(bool)][keys].drop_duplicates()
    listed = "; ".join(
        f"`{r.setting}` {rl_label(r.rl_algorithm, r.num_generations) + ' ' if 'rl_algorithm' in keys else ''}"
        f"{r.method} at sft_lr {r.sft_lr:g}" + (f", rl_lr {r.rl_lr:g}" if "rl_lr" in keys else "")
        for r in d.itertuples()
    )
    return (
        f"Diverged configurations (non-finite run, marked in every cell of their setting since the cells "
        f"share one run, never selected): {listed}."
    )


def generalisation_text(df: pd.DataFrame) -> str:
    """Which settings can measure generalisation (metrics on held-out prompts) and which cannot."""
    settings = list(dict.fromkeys(df["setting"]))
    held = [f"`{s}`" for s in settings if _on(df, s) == "held-out"]
    train = [f"`{s}`" for s in settings if _on(df, s) != "held-out"]
    parts = ["Generalisation:"]
    if held:
        parts.append(
            f"{', '.join(held)} share parameters across prompts; SFT and RL train on disjoint prompt sets "
            "and every metric of these settings (validation selection and test numbers alike) is measured "
            "on held-out prompts that neither SFT nor RL sees (the RL-prompt values are the `train_*` "
            "columns of results.csv): they CAN measure generalisation."
        )
    if train:
        parts.append(
            f"{', '.join(train)} have per-prompt parameters (a prompt that no update touches stays at "
            "pi_base), so they are evaluated on their RL training prompts and CANNOT measure generalisation."
        )
    return " ".join(parts)


def pear_data_text(df: pd.DataFrame) -> list[str]:
    """Per setting with PEAR: whether its offline data come from a stochastic pi_beta with recorded
    log-probs, or from a deterministic expert (PEAR's degenerate case)."""
    pear = df[(df["family"] == "pear") & (df["stage"] == "sft")]
    if not len(pear) or "pear_degenerate" not in pear:
        return []
    parts = []
    for s, g in pear.groupby("setting", sort=False):
        frac = float(g["pear_degenerate"].astype(bool).mean())
        if frac > 0.5:
            parts.append(
                f"`{s}`: the data come from a deterministic expert on {frac:.0%} of the seeds (every "
                "recorded log pi_beta is 0, so PEAR's rho_t are not importance ratios): the DEGENERATE case"
            )
        else:
            parts.append(
                f"`{s}`: the data are drawn from the stochastic pi_beta != pi_base with log pi_beta recorded "
                f"when drawn (degenerate on {frac:.0%} of the seeds): PEAR's setting"
            )
    return ["PEAR's offline data: " + "; ".join(parts) + ".", ""]


def token_approximation_section(a: MapAnalysis) -> list[str]:
    """Token-level GIFT minus sequence-level GIFT (``gift_seq``, the exact Gibbs target over sequences),
    each at its selected configuration, per cell, after SFT and after RL (test seeds)."""
    c = analysis.family_contrast(a.test, "gift", "gift_seq")
    if not len(c):
        return []
    c["p_holm"] = [f"{q:.2g}" for q in analysis.holm(c["p"])]
    c["cell"] = [_cell_label(r) for r in c.itertuples()]
    c["gift - gift_seq"] = [analysis.fmt_ci(d, h) for d, h in zip(c["diff"], c["ci"])]
    sig = c[analysis.holm(c["p"]) < 0.05]
    lines = []
    for stage, g in c.groupby("stage", sort=False):
        s = sig[sig["stage"] == stage]
        lines.append(
            f"after {stage.upper()}: mean |difference| {g['diff'].abs().mean():.3f} in pass@1 over "
            f"{len(g)} cells, {int((s['diff'] > 0).sum())} significantly in favour of the token target and "
            f"{int((s['diff'] < 0).sum())} of the sequence target (Holm within this table)"
        )
    return [
        "## GIFT: what the token approximation costs",
        "",
        "Token-level GIFT (per-position Gibbs targets) minus `gift_seq` (the exact sequence-level Gibbs "
        "target q(y) ∝ pi_base(y) exp(beta 1[y = demo])), each at its validation-selected configuration, "
        "paired by test seed (pass@1; not in the claims' Holm family): " + "; ".join(lines) + ".",
        "",
        analysis.markdown_table(c[["setting", "cell", "stage", "gift - gift_seq", "p_holm"]]),
        "",
    ]


def make_figures(df: pd.DataFrame, cfg: dict, out: Path, a: MapAnalysis, esc: pd.DataFrame | None) -> None:
    for s in dict.fromkeys(a.best["setting"]):
        plot_phase(a, s, out)
    if esc is not None and len(esc):
        plots.plot_escape(esc, out, cfg["reward_threshold"])


def _escape_selected(esc: pd.DataFrame, a: MapAnalysis) -> pd.DataFrame:
    """Escape rows of the selected configurations (longest budget), test seeds only."""
    sel = a.selected[a.selected["rl_steps"] == a.selected["rl_steps"].max()]
    sel = sel[sel["rl_algorithm"] == "exact_pg"]  # theorem T5's escape times are exact PG's
    keys = [*analysis.MAP, "wrong_demo_frac", "base_correct_mass", "family", "config_id"]
    return esc[esc["split"] == "test"].merge(sel[keys], on=keys, how="inner")


def write_markdown(
    df: pd.DataFrame, cfg: dict, out: Path, extra: dict[str, str], esc: pd.DataFrame | None = None
) -> Path:
    """Assemble report.md, headline.md and selections.csv from the map frame, the resolved config and
    optional sections."""
    margin = cfg.get("min_effect", analysis.MIN_EFFECT)
    tie = cfg.get("selection_tie", analysis.SELECTION_TIE)  # runs written before the field: the old tie
    a = analyse_map(df, cfg["headline_k"], margin, stability_tol=cfg.get("stability_tol"), tie=tie)
    a.selected.to_csv(out / "selections.csv", index=False, float_format="%.6g")
    if esc is not None:
        esc = _escape_selected(esc, a)
    make_figures(df, cfg, out, a, esc)
    settings = list(dict.fromkeys(df["setting"]))
    headline = headline_markdown(a, cfg)
    (out / "headline.md").write_text(headline)
    md = _intro(df, cfg, a, settings, headline) + _claims(a) + exploration_section(df, a)
    md += token_approximation_section(a)
    md += _grid_edges(df, a)
    if extra.get("theorems"):
        text = extra["theorems"].strip()
        md += ([] if text.startswith("## ") else ["## Theorems", ""]) + [text, ""]
    for s in settings:
        md += _setting_map(a, s, out)
    if esc is not None and len(esc):
        c = analysis.compare_escape(esc, cfg["reward_threshold"])
        md += [f"## {c.title} (exact PG)", "", analysis.markdown_table(c.table.reset_index()), ""]
        md += [c.paragraph, ""]
        if (out / "fig_e_escape.png").exists():
            md += ["![escape](fig_e_escape.png)", ""]
    if extra.get("transformer"):
        md += [extra["transformer"].strip(), ""]
    if cfg.get("timing"):
        md += ["## Timing", "", ", ".join(f"{k_}: {v:.1f} s" for k_, v in cfg["timing"].items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def _intro(df: pd.DataFrame, cfg: dict, a: MapAnalysis, settings: list[str], headline: str) -> list[str]:
    """The report's title, what was run, the caveats, the headline and the best family per cell."""
    pipe = cfg["pipeline"]
    return [
        "# When does each SFT method make RL work best? (toybench report)",
        "",
        f"Tabular map of SFT methods as RL initialisers: {len(settings)} settings "
        f"({', '.join(settings)}); RL stage {', '.join(cfg.get('rl_algorithms', [pipe['rl_algorithm']]))} "
        f"(sampled GRPO with G in {list(cfg.get('num_generations', [pipe['num_generations']]))} samples per "
        "prompt, each seed its own rollout stream shared by every method; exact PG is the infinite-sample "
        f"contrast); teacher error {list(cfg['wrong_demo_fracs'])} (fraction of prompts, "
        f"{cfg['error_unit']}-level), base mass on correct answers {list(cfg['base_correct_masses'])}, RL "
        f"budgets {list(cfg['rl_budgets'])} steps (in samples: G x steps x RL prompts, column `samples`), "
        f"SFT {pipe['sft_steps']} steps (early-stopped SFT: {cfg.get('sft_early_steps', '-')}), "
        f"{df['family'].nunique()} method families. SFT strength and the RL step size are separate knobs: "
        f"each SFT family has K = {len(cfg['lr_grid'])} SFT configurations (plain SFT: K SFT learning "
        "rates; the others: SFT learning rates x the method's knob), each crossed with the RL step sizes "
        f"{list(cfg.get('rl_lrs', []))} that every family, `none` included, shares. Per cell, each family's "
        "configuration is selected by mean post-RL pass@1 on "
        f"{cfg['val_seeds']} validation seeds (configurations whose score moves by more than "
        f"{cfg.get('stability_tol')} when the step sizes are multiplied by 1 + 1e-6 are rejected first); "
        f"every number below comes from {cfg['seeds']} disjoint test "
        "seeds. Metrics are exact expectations; effects are paired by seed with 95% Student-t intervals. "
        f"Every claim is decided on its primary comparison, method -> RL vs SFT -> RL, against a minimum "
        f"effect of {a.margin:g} (one-sided paired t-tests against +-margin and an equivalence test, TOST), "
        "Holm-Bonferroni-adjusted within one family per claim; the comparisons vs no SFT (and vs "
        "early-stopped SFT where it ran) are reported apart, each its own family. Outcomes: reproduces "
        "(every test shows an effect above the margin), refuted (one shows an effect beyond the margin the "
        "other way), equivalent (no effect as large as the margin), not testable (no test: (a) where "
        "validation picks the same family after SFT and after RL, (d) where PEAR's data are not "
        "off-policy), inconclusive (otherwise). Raw records: `results.csv`; "
        "config: `config.json`; re-plot with `toybench plot DIR`.",
        "",
        generalisation_text(df),
        "",
        base_competence_text(a),
        "",
        *pear_data_text(df),
        "## Headline (also `headline.md`)",
        "",
        headline,
        "## Best family per cell (longest RL budget)",
        "",
        "Post-RL pass@1, pass@16 and pass@64 (exact per prompt from the policy) of the family with the "
        "highest mean post-RL pass@1 on the test seeds; * = significantly best (Holm within the cell).",
        "",
        analysis.markdown_table(best_table(a)),
        "",
        "## Claims: where each outcome holds",
        "",
    ]


def _exact_last(col: pd.Series) -> pd.Series:
    return col.map(lambda v: (v == "exact_pg", v)) if col.name == "rl_algorithm" else col


def exploration_section(df: pd.DataFrame, a: MapAnalysis) -> list[str]:
    """Exploration as a predictor: within-cell rank correlation of each pre-RL measure with the post-RL
    pass@1 across configurations, per setting, sampled RL and exact PG side by side."""
    t = exploration_table(df)
    if not len(t):
        return []
    t["rl"] = [rl_label(x, g) for x, g in zip(t["rl_algorithm"], t["num_generations"])]
    t["rho"] = [f"{r:+.2f} ± {h:.2f}" if np.isfinite(r) else "-" for r, h in zip(t["rho"], t["ci"])]
    w = t.pivot_table(index=["setting", "predictor"], columns="rl", values="rho", aggfunc="first", sort=False)
    labels = t.drop_duplicates("rl").sort_values(["rl_algorithm", "num_generations"], key=_exact_last)
    order = list(labels["rl"])
    return [
        "## Exploration as a predictor of the post-RL result",
        "",
        "Spearman rank correlation between a measure of exploration at the end of SFT (pass@k, coverage, "
        "entropy) and the post-RL pass@1, across every family x configuration of a cell (each the mean over "
        "the test seeds, longest RL budget), averaged over the setting's cells with a 95% t interval over "
        "cells; sampled RL and exact PG side by side. A measure that predicts the post-RL result under "
        "sampled RL but not under exact PG is one whose effect goes through exploration.",
        "",
        analysis.markdown_table(w[order].reset_index()),
        "",
    ]


def _claims(a: MapAnalysis) -> list[str]:
    """Per claim and map, the cells of each outcome; the Holm families."""
    md = []
    for claim, g in a.summary.groupby("claim", sort=True):
        md += [f"**({claim}) {CLAIM_TEXT[claim]}.**", ""]
        for r in g.itertuples():
            md.append(
                f"- `{r.setting}` ({rl_label(r.rl_algorithm, r.num_generations)}): {r.outcome} {r.condition}."
            )
        md.append("")
    fam = a.tests[a.tests["diff"].notna()].groupby(["claim", "ref"], sort=True).size() if len(a.tests) else []
    return md + [
        "Holm families (one per claim and comparison; each test contributes its three one-sided p-values): "
        + "; ".join(f"({c}) vs {r}: {n} tests" for (c, r), n in (fam.items() if len(fam) else []))
        + ".",
        "",
    ]


def _grid_edges(df: pd.DataFrame, a: MapAnalysis) -> list[str]:
    """The tuning-grid section: selections on an edge of the grid, the stability filter, diverged runs."""
    return [
        "## Tuning grid: selections on an edge, and the stability filter",
        "",
        *grid_text(a),
        diverged_text(df),
        "",
    ]


def _setting_map(a: MapAnalysis, s: str, out: Path) -> list[str]:
    """One setting's map: phase diagram, verdicts per cell, effects and the selected configurations."""
    md = []
    md += [f"## Map: `{s}`", ""]
    if (out / f"phase_{s}.png").exists():
        md += [f"![phase diagram {s}](phase_{s}.png)", ""]
    v = a.verdicts[a.verdicts["setting"] == s].copy()
    v["cell"] = [_cell_label(r) for r in v.itertuples()]
    md += [
        "### Verdicts per cell",
        "",
        analysis.markdown_table(
            v.reindex(
                columns=["claim", "cell", "outcome", "vs_sft", "outcome_vs_none", "vs_none", "p_holm"]
            ).fillna("")
        ),
        "",
        "### Effects vs `sft` and vs `none` (post-RL pass@1, test seeds)",
        "",
        analysis.markdown_table(effects_table(a, s)),
        "",
        "### Selected configurations (validation seeds)",
        "",
        "selected: "
        + "; ".join(
            f"{r.family} -> {r.method} lr {r.sft_lr:g}"
            + (f" (rl_lr {r.rl_lr:g})" if r.rl_lr != r.sft_lr else "")
            + f" [{_cell_label(r)}]"
            for r in a.selected[a.selected["setting"] == s].itertuples()
        ),
        "",
        analysis.markdown_table(selected_table(a, s)),
        "",
    ]
    return md
