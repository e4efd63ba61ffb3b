"""Statistics of the map: validation selection, effects vs ``sft`` (primary) and ``none`` /
``sft_early`` (secondary) paired by seed against a minimum effect, one Holm family per claim and
reference, five outcomes per cell (reproduces, refuted, equivalent, not testable, inconclusive), their
conditions, the best family per cell. Validation rows fix every choice before any test row is read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from toybench.analysis.stats import OUTCOMES, fmt_ci, holm, outcome, paired_test

# A map frame has one row per setting x RL stage (algorithm, G) x cell x RL budget x method family x
# configuration x seed x stage,
# with columns CELL, ``family``, ``config_id``, ``method`` (full spec), ``split`` ('val' | 'test'),
# ``seed``, ``stage`` ('sft': end of SFT | 'rl': end of the RL budget) and the metrics.
CELL = ["setting", "rl_algorithm", "num_generations", "wrong_demo_frac", "base_correct_mass", "rl_steps"]
#: one map: a setting under one RL stage (its claims' conditions are computed over the map's cells)
MAP = ["setting", "rl_algorithm", "num_generations"]


#: default tie of selection: validation means within this of a family's best count as tied (the lowest
#: config_id wins), so that float32 rounding (about 1e-6 in J) cannot decide a near-tie between
#: configurations. The report passes its own (``ReportConfig.selection_tie``).
SELECTION_TIE = 1e-4


def config_scores(df: pd.DataFrame, metric: str = "J", stability_tol: float | None = None) -> pd.DataFrame:
    """Every configuration's validation score: mean post-RL ``metric`` over the VALIDATION seeds (no
    other row is read), ``shift`` = |score on the stability copies (``split`` 'val_perturbed': the same
    seeds with step sizes x (1 + 1e-6)) - score| (NaN without copies) and ``stable`` (shift <=
    ``stability_tol``; None: every configuration is stable). A configuration with any non-finite validation
    value (a diverged run) or an unstable one scores -inf.

    One row per cell x family x configuration: CELL, family, config_id, method, sft_lr, rl_lr, val_score,
    shift, stable, diverged.
    """
    keys = [*CELL, "family", "config_id"]
    rl = df[df["stage"] == "rl"]
    val = rl[rl["split"] == "val"]
    extra = [c for c in ("method", "sft_lr", "rl_lr") if c in val.columns]
    score = val.groupby(keys, sort=False).agg(val_score=(metric, "mean"), **{c: (c, "first") for c in extra})
    score["diverged"] = val[metric].isna().groupby([val[k] for k in keys], sort=False).any()
    pert = rl[rl["split"] == "val_perturbed"].groupby(keys, sort=False)[metric].mean()
    score["shift"] = (pert.reindex(score.index) - score["val_score"]).abs()
    tol = np.inf if stability_tol is None else stability_tol
    score["stable"] = ~(score["shift"] > tol)  # NaN (no copy, or diverged) is not evidence of instability
    score.loc[score["diverged"] | ~score["stable"], "val_score"] = -np.inf
    return score.reset_index()


def select_configs(
    df: pd.DataFrame, metric: str = "J", stability_tol: float | None = None, tie: float = SELECTION_TIE
) -> pd.DataFrame:
    """Per cell and method family, the configuration with the best validation score
    (``config_scores``: mean post-RL ``metric`` on the VALIDATION seeds, unstable and diverged
    configurations excluded). Means within ``tie`` of the best are tied and the lowest ``config_id``
    among them wins (the smallest SFT learning rate, then the smallest RL step size of the base grid).

    Returns one row per cell x family: CELL, family, config_id, method, sft_lr, rl_lr, val_score, shift,
    stable, diverged; per step-size column (``rl``, ``sft``) ``<x>_at_end``: the chosen value is the
    smallest or largest of the family's grid in the cell, counted only for a grid of 3 or more values (a
    smaller grid has no interior); ``<x>_edge``: 'low' / 'high' where it is at that end AND scores more
    than ``tie`` above the configuration next to it on the grid (same method, the other step size
    equal), so the optimum may lie beyond the grid ('' otherwise: interior, or a plateau that reaches
    into the grid); ``<x>_at_edge`` = ``<x>_edge`` is set; ``at_edge``: either is.
    """
    score = config_scores(df, metric, stability_tol)
    best = score.groupby([*CELL, "family"])["val_score"].transform("max")
    tied = score["val_score"] >= best - tie  # -inf - tol is -inf: an all-rejected family ties
    sel = score[tied].sort_values([*CELL, "family", "config_id"])
    sel = sel.groupby([*CELL, "family"], sort=False).head(1).reset_index(drop=True)
    for col in ("rl_lr", "sft_lr"):
        if col in score:
            _mark_edges(sel, score, col, tie)
    sel["at_edge"] = sel.get("rl_at_edge", False) | sel.get("sft_at_edge", False)
    return sel


def _mark_edges(sel: pd.DataFrame, score: pd.DataFrame, col: str, tie: float) -> None:
    """Add ``<x>_at_end``, ``<x>_edge`` and ``<x>_at_edge`` for the step-size column ``col`` to ``sel``
    (in place; see :func:`select_configs`)."""
    x, fam = col.removesuffix("_lr"), [*CELL, "family"]
    other = "sft_lr" if col == "rl_lr" else "rl_lr"
    ends, edge = [], []
    groups = dict(list(score.groupby(fam, sort=False)))
    for r in sel.itertuples(index=False):
        g = groups.get(tuple(getattr(r, c) for c in fam), score.iloc[:0])
        grid = np.unique(g[col].dropna().to_numpy())
        v, side = getattr(r, col), ""
        if len(grid) >= 3 and np.isfinite(v):
            side = "low" if np.isclose(v, grid[0]) else "high" if np.isclose(v, grid[-1]) else ""
        ends.append(bool(side))
        if side:
            o = getattr(r, other)
            nb = g[
                (g["method"] == r.method)
                & np.isclose(g[col], grid[1] if side == "low" else grid[-2])
                & ((g[other] == o) | (g[other].isna() & pd.isna(o)))
            ]
            if len(nb) and not r.val_score > nb["val_score"].max() + tie:
                side = ""  # a plateau: the neighbour inside the grid is as good
        edge.append(side)
    sel[f"{x}_at_end"] = ends
    sel[f"{x}_edge"] = edge
    sel[f"{x}_at_edge"] = [bool(e) for e in edge]


def selected_rows(df: pd.DataFrame, sel: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of ``split`` that belong to each cell's selected configuration of each family."""
    keys = [*CELL, "family", "config_id"]
    return df[df["split"] == split].merge(sel[keys], on=keys, how="inner")


#: the comparison every claim is decided on: method -> RL vs SFT -> RL, as the papers state them
PRIMARY_REF = "sft"
#: comparisons reported apart, each its own Holm family: no SFT, and early-stopped SFT (less SFT)
SECONDARY_REFS = ("none", "sft_early")
#: default minimum effect in post-RL pass@1 (``ReportConfig.min_effect``)
MIN_EFFECT = 0.02
P_COLS = ("p_above", "p_below", "p_equiv")

#: claim key -> (its method family, the metric it is about, what it says)
MAP_CLAIMS = {
    "b": ("curio", "J", "CurioSFT -> RL beats SFT -> RL (post-RL pass@1)"),
    "c": ("gift", "J", "GIFT (finite beta) -> RL beats SFT -> RL (post-RL pass@1)"),
    "d": ("pear", "pass@k", "PEAR -> RL beats SFT -> RL in post-RL pass@k, on off-policy data"),
}


def _wide(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(cell..., seed) x family table of ``metric``."""
    return d.pivot_table(index=[*CELL, "seed"], columns="family", values=metric, aggfunc="first")


def _cells(w: pd.DataFrame):
    """(cell, seed x family table) per cell of a ``_wide`` table; families absent from the cell dropped."""
    lv = list(range(len(CELL)))
    for cell, g in w.groupby(level=lv, sort=False):
        yield cell, g.droplevel(lv).dropna(axis=1, how="all")


def map_effects(test: pd.DataFrame, metrics: tuple[str, ...] = ("J",), margin: float = MIN_EFFECT):
    """Every family vs each reference (``PRIMARY_REF``, ``SECONDARY_REFS``) present in a cell, post-RL,
    paired by seed (test rows only), against the minimum effect ``margin``.

    One row per cell x family x reference x metric: diff, ci, p (two-sided), n and the one-sided
    ``p_above`` / ``p_below`` / ``p_equiv`` of ``paired_test`` (none adjusted yet). ``none`` is a reference
    only; a secondary reference is compared with the others but not with ``sft``.
    """
    rl = test[test["stage"] == "rl"]
    rows = []
    for metric in metrics:
        for cell, g in _cells(_wide(rl, metric)):
            for fam in g.columns:
                for ref in (PRIMARY_REF, *SECONDARY_REFS):
                    skip = fam == "none" or (fam in SECONDARY_REFS and ref == PRIMARY_REF)
                    if fam == ref or ref not in g.columns or skip:
                        continue
                    pt = paired_test(g[fam], g[ref], margin)
                    rows.append(dict(zip(CELL, cell), family=fam, ref=ref, metric=metric, **pt))
    return pd.DataFrame(rows)


def reversal_picks(val: pd.DataFrame, sel: pd.DataFrame) -> list[tuple[tuple, str, str]]:
    """Claim (a)'s candidates per cell, from VALIDATION rows only: (cell, family best after SFT, family
    best after RL), each family at its selected configuration (``none`` excluded)."""
    v = selected_rows(val, sel, "val")
    picks = []
    for cell, g in v[v["family"] != "none"].groupby(CELL, sort=False):
        m = g.groupby(["stage", "family"])["J"].mean()
        picks.append((cell, m["sft"].idxmax(), m["rl"].idxmax()))
    return picks


def reversal_tests(test: pd.DataFrame, picks, margin: float = MIN_EFFECT) -> pd.DataFrame:
    """Claim (a) on the TEST rows of the selected configurations, for the candidates ``picks``
    (``reversal_picks``): post-SFT J(best_sft) - J(best_rl) and post-RL J(best_rl) - J(best_sft) against
    ``margin``. A cell whose candidates coincide has no test (diff NaN): (a) is 'not testable' there."""
    rows = []
    for cell, best_sft, best_rl in picks:
        t = test[(test[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]
        base = dict(zip(CELL, cell), best_after_sft=best_sft, best_after_rl=best_rl)
        if best_sft == best_rl:
            nan = np.nan
            rows.append(dict(base, test="none (same family)", diff=nan, ci=nan, p=nan, n=0))
            rows[-1].update({c: nan for c in P_COLS})
            continue
        for stage, a, b in (("sft", best_sft, best_rl), ("rl", best_rl, best_sft)):
            w = _wide(t[t["stage"] == stage], "J").droplevel(list(range(len(CELL))))
            rows.append(
                dict(base, test=f"after {stage.upper()}: {a} - {b}", **paired_test(w[a], w[b], margin))
            )
    return pd.DataFrame(rows)


def map_reversal(df: pd.DataFrame, sel: pd.DataFrame, margin: float = MIN_EFFECT) -> pd.DataFrame:
    """Claim (a) per cell: the family best after SFT is not the best after RL. Both families are chosen
    on the validation seeds (``reversal_picks``), then tested on the test seeds (``reversal_tests``)."""
    picks = reversal_picks(df[df["split"] == "val"], sel)
    return reversal_tests(selected_rows(df, sel, "test"), picks, margin)


def holm_family(t: pd.DataFrame) -> pd.DataFrame:
    """``t`` with ``<p>_holm`` for each of ``P_COLS``: Holm over ONE family made of every one-sided p of
    every row of ``t`` (NaN stays NaN and does not count)."""
    adj = holm(t[list(P_COLS)].to_numpy(float).ravel()).reshape(len(t), len(P_COLS))
    return t.assign(**{f"{c}_holm": adj[:, i] for i, c in enumerate(P_COLS)})


def claim_tests(
    effects: pd.DataFrame, reversal: pd.DataFrame, k_metric: str, pear_settings=None
) -> pd.DataFrame:
    """Every test of every claim with its Holm adjustment: one family per claim and reference (the
    primary comparison vs ``sft`` and each secondary one apart), over all the claim's cells.

    Claim (d) is tested only in ``pear_settings`` (None: wherever PEAR ran). Columns: claim, ref,
    CELL, family, metric, the test's numbers and ``p_above_holm`` / ``p_below_holm`` / ``p_equiv_holm``.
    """
    parts = []
    for key, (fam, metric, _) in MAP_CLAIMS.items():
        metric = k_metric if metric == "pass@k" else metric
        e = effects[(effects["family"] == fam) & (effects["metric"] == metric)] if len(effects) else effects
        if key == "d" and pear_settings is not None and len(e):
            e = e[e["setting"].isin(pear_settings)]
        for _ref, g in e.groupby("ref", sort=False) if len(e) else []:
            parts.append(holm_family(g).assign(claim=key))
    if len(reversal):
        parts.append(holm_family(reversal).assign(claim="a", ref=PRIMARY_REF, metric="J"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["claim", "ref", *CELL])


def _verdict(g: pd.DataFrame, alpha: float) -> str:
    g = g[g["diff"].notna()]
    return outcome(*(g[f"{c}_holm"].tolist() for c in P_COLS), alpha)


def claim_verdicts(tests: pd.DataFrame, alpha: float = 0.05, untested: pd.DataFrame | None = None):
    """One row per claim x cell: ``outcome`` from the primary comparison (vs ``sft``), each secondary
    reference's outcome apart (``outcome_vs_<ref>``), the effects (``vs_<ref>``: mean ± 95% CI) and the
    primary test's Holm-adjusted p (above / below / equivalent). ``untested`` (claim + CELL rows): cells
    where a claim has no valid test (e.g. (d) where PEAR's data are not off-policy): 'not testable'.
    """
    rows = []
    for (claim, *cell), g in tests.groupby(["claim", *CELL], sort=False):
        row = dict(zip(CELL, cell), claim=claim)
        for ref, r in g.groupby("ref", sort=False):
            key = "outcome" if ref == PRIMARY_REF else f"outcome_vs_{ref}"
            row[key] = _verdict(r, alpha)
            eff = [(t, d, h) for t, d, h in zip(r.get("test", [""] * len(r)), r["diff"], r["ci"])]
            row[f"vs_{ref}"] = "; ".join(
                (f"{t}: " if isinstance(t, str) and t else "") + fmt_ci(d, h)
                for t, d, h in eff
                if np.isfinite(d)
            )
            if ref == PRIMARY_REF:
                ok = r[r["diff"].notna()]
                row["p_holm"] = "; ".join(
                    "/".join(f"{q:.2g}" for q in x) for x in zip(*(ok[f"{c}_holm"] for c in P_COLS))
                )
        if claim == "a" and not row.get("vs_sft"):
            row["vs_sft"] = f"validation picks {g['best_after_sft'].iloc[0]} after SFT and after RL"
        rows.append(row)
    for r in untested.itertuples(index=False) if untested is not None else []:
        rows.append(dict(r._asdict(), outcome="not testable"))
    out = pd.DataFrame(rows)
    if len(out) and "outcome" not in out:
        out["outcome"] = "not testable"
    return out.fillna({"outcome": "not testable"}) if len(out) else out


def condition(cells: pd.DataFrame, hit: pd.Series) -> str:
    """The simplest rule 'teacher error >= x and base mass <= y [and budget b]' that matches exactly the
    cells where ``hit`` holds (``cells`` has wrong_demo_frac, base_correct_mass, rl_steps); computed from
    the data, else the list of cells.

    >>> c = pd.DataFrame({"wrong_demo_frac": [0, .2, 0, .2], "base_correct_mass": [.1, .1, .01, .01]})
    >>> c["rl_steps"] = 5
    >>> condition(c, pd.Series([False, False, False, True]))
    'when teacher error >= 0.2 and base mass <= 0.01'
    """
    hit = hit.to_numpy(bool)
    if not hit.any():
        return "in no cell"
    if hit.all():
        return "in every cell"
    w, b, r = (cells[c].to_numpy(float) for c in ("wrong_demo_frac", "base_correct_mass", "rl_steps"))
    budgets = [None, *sorted(set(r))]
    for x in sorted(set(w)):
        for y in sorted(set(b), reverse=True):
            for rb in budgets:
                rule = (w >= x) & (b <= y) & ((r == rb) if rb is not None else True)
                if np.array_equal(rule, hit):
                    parts = [
                        f"teacher error >= {x:g}" if x > w.min() else "",
                        f"base mass <= {y:g}" if y < b.max() else "",
                    ]
                    parts.append(f"RL budget {rb:g} steps" if rb is not None and len(set(r)) > 1 else "")
                    return "when " + " and ".join(p for p in parts if p)
    listed = ", ".join(f"(error {a:g}, mass {c:g}, {d:g} steps)" for a, c, d, h in zip(w, b, r, hit) if h)
    return f"in {int(hit.sum())} of {len(hit)} cells, matching no single threshold rule: {listed}"


def best_per_cell(test: pd.DataFrame, metric: str = "J", alpha: float = 0.05) -> pd.DataFrame:
    """Per cell: the family with the highest mean post-RL ``metric`` on the test seeds, and whether it is
    significantly best (paired tests against every other family, Holm within the cell, all p < alpha)."""
    rl = test[test["stage"] == "rl"]
    rows = []
    for cell, g in _cells(_wide(rl, metric)):
        means = g.mean()
        best = means.idxmax()
        tests = [paired_test(g[best], g[o]) for o in g.columns if o != best]
        p = holm([t["p"] for t in tests])
        sig = bool(len(tests)) and all(
            np.isfinite(q) and q < alpha and t["diff"] > 0 for q, t in zip(p, tests)
        )
        runner = means.drop(best).idxmax() if len(means) > 1 else best
        rows.append(dict(zip(CELL, cell), best=best, best_J=means[best], runner_up=runner, significant=sig))
    return pd.DataFrame(rows)


@dataclass
class MapAnalysis:
    """Everything report.md says, computed from the map frame alone."""

    selected: pd.DataFrame  # cell x family: the validation-selected configuration
    test: pd.DataFrame  # test rows of the selected configurations
    effects: pd.DataFrame  # cell x family x reference x metric: paired tests against the margin
    reversal: pd.DataFrame  # claim (a)'s tests
    tests: pd.DataFrame  # every claim test with its Holm adjustment (one family per claim and reference)
    verdicts: pd.DataFrame  # claim x cell: outcomes and effect sizes
    best: pd.DataFrame  # cell: best family, significantly best or not
    summary: pd.DataFrame  # claim x setting x outcome: the condition under which it holds
    scores: pd.DataFrame  # every configuration's validation score, stability shift, rejection
    margin: float = MIN_EFFECT  # the minimum effect


def pear_settings(val: pd.DataFrame) -> list[str]:
    """Settings where PEAR's offline data are off-policy (drawn from a stochastic pi_beta with recorded
    log-probs on most seeds): the only ones where claim (d) is testable."""
    if "pear_degenerate" not in val:
        return []
    p = val[(val["family"] == "pear") & (val["stage"] == "sft")]
    frac = p.groupby("setting", sort=False)["pear_degenerate"].apply(lambda x: x.astype(bool).mean())
    return [s for s, f in frac.items() if f <= 0.5]


def analyse_map(
    df: pd.DataFrame,
    k: int,
    margin: float = MIN_EFFECT,
    alpha: float = 0.05,
    stability_tol: float | None = None,
    tie: float = SELECTION_TIE,
) -> MapAnalysis:
    """The map's statistics in two stages. Validation stage: only validation rows exist (and their
    stability copies): configurations, claim (a)'s candidates and the settings where (d) applies are fixed
    there. Test stage: the test rows of the selected configurations give every effect, test, verdict and
    the best family per cell."""
    val = df[df["split"] != "test"]
    scores = config_scores(val, "J", stability_tol)
    sel = select_configs(val, "J", stability_tol, tie)
    picks = reversal_picks(val, sel)
    pears = pear_settings(val)
    test = selected_rows(df[df["split"] == "test"], sel, "test")  # the test stage starts here
    effects = map_effects(test, ("J", f"pass@{k}"), margin)
    reversal = reversal_tests(test, picks, margin)
    tests = claim_tests(effects, reversal, f"pass@{k}", pears)
    pe = effects[(effects["family"] == "pear") & ~effects["setting"].isin(pears)] if len(effects) else effects
    untested = pe[CELL].drop_duplicates().assign(claim="d", vs_sft="PEAR's data are not off-policy here")
    verdicts = claim_verdicts(tests, alpha, untested)
    rows = []
    for (claim, *m), g in verdicts.groupby(["claim", *MAP], sort=True):
        for out in OUTCOMES:
            if (g["outcome"] == out).any():
                hit = condition(g, g["outcome"] == out)
                rows.append(dict(zip(MAP, m), claim=claim, outcome=out, condition=hit))
    best = best_per_cell(test, "J")
    return MapAnalysis(
        sel, test, effects, reversal, tests, verdicts, best, pd.DataFrame(rows), scores, margin
    )


def family_contrast(test: pd.DataFrame, a: str, b: str, metric: str = "J") -> pd.DataFrame:
    """Per cell and stage ('sft', 'rl'): ``metric`` of family ``a`` minus family ``b`` (each at its
    selected configuration), paired by test seed: diff, ci, p (two-sided, not in the Holm family), n.
    Empty where the two families never share a cell."""
    rows = []
    for stage in ("sft", "rl"):
        for cell, g in _cells(_wide(test[test["stage"] == stage], metric)):
            if {a, b} <= set(g.columns):
                rows.append(dict(zip(CELL, cell), stage=stage, **paired_test(g[a], g[b])))
    return pd.DataFrame(rows)
