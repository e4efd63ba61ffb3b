"""Statistics of the map: validation selection, effects vs ``sft`` and ``none`` paired by
seed, Holm over the whole family, per-cell claim verdicts, their conditions, the best family per cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from toybench.analysis.stats import fmt_ci, holm, outcome, paired_test

# A map frame has one row per setting x cell x RL budget x method family x configuration x seed x stage,
# with columns CELL, ``family``, ``config_id``, ``method`` (full spec), ``split`` ('val' | 'test'),
# ``seed``, ``stage`` ('sft': end of SFT | 'rl': end of the RL budget) and the metrics.
CELL = ["setting", "wrong_demo_frac", "base_correct_mass", "rl_steps"]
OUTCOMES = ("reproduces", "does not reproduce", "inconclusive")


#: validation means within this of a family's best count as tied (the lowest config_id wins), so that
#: float32 rounding (about 1e-6 in J) cannot decide a near-tie between configurations
SELECTION_TIE = 1e-4


def select_configs(df: pd.DataFrame, metric: str = "J") -> pd.DataFrame:
    """Per cell and method family, the configuration with the best mean post-RL ``metric`` on the
    VALIDATION seeds (test rows are dropped before anything is computed). Means within
    ``SELECTION_TIE`` of the best are tied and the lowest ``config_id`` among them wins; a
    configuration with any non-finite validation value, a diverged run, scores -inf.

    Returns one row per cell x family: CELL, family, config_id, method, sft_lr, rl_lr, val_score.
    """
    val = df[(df["split"] == "val") & (df["stage"] == "rl")]
    keys = [*CELL, "family", "config_id"]
    extra = [c for c in ("method", "sft_lr", "rl_lr") if c in val.columns]
    score = val.groupby(keys, sort=False).agg(val_score=(metric, "mean"), **{c: (c, "first") for c in extra})
    # a configuration with a non-finite validation run (diverged) is never selected over a finite one
    bad = val[metric].isna().groupby([val[k] for k in keys], sort=False).any()
    score.loc[bad[bad].index, "val_score"] = -np.inf
    score = score.reset_index()
    best = score.groupby([*CELL, "family"])["val_score"].transform("max")
    tied = score["val_score"] >= best - SELECTION_TIE  # -inf - tol is -inf: an all-diverged family ties
    score = score[tied].sort_values([*CELL, "family", "config_id"])
    return score.groupby([*CELL, "family"], sort=False).head(1).reset_index(drop=True)


def selected_rows(df: pd.DataFrame, sel: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of ``split`` that belong to each cell's selected configuration of each family."""
    keys = [*CELL, "family", "config_id"]
    return df[df["split"] == split].merge(sel[keys], on=keys, how="inner")


#: claim key -> (its method family, the metric it is about, what it says)
MAP_CLAIMS = {
    "b": ("curio", "J", "CurioSFT is a better RL initialiser than SFT and than no SFT (post-RL pass@1)"),
    "c": (
        "gift",
        "J",
        "GIFT (finite beta) is a better RL initialiser than SFT and than no SFT (post-RL pass@1)",
    ),
    "d": ("pear", "pass@k", "PEAR raises post-RL pass@k over SFT and over no SFT"),
}


def _wide(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(cell..., seed) x family table of ``metric``."""
    return d.pivot_table(index=[*CELL, "seed"], columns="family", values=metric, aggfunc="first")


def _cells(w: pd.DataFrame):
    """(cell, seed x family table) per cell of a ``_wide`` table; families absent from the cell dropped."""
    lv = list(range(len(CELL)))
    for cell, g in w.groupby(level=lv, sort=False):
        yield cell, g.droplevel(lv).dropna(axis=1, how="all")


def map_effects(test: pd.DataFrame, metrics: tuple[str, ...] = ("J",)) -> pd.DataFrame:
    """Every family vs ``sft`` and vs ``none`` in every cell, post-RL, paired by seed (test rows only).

    One row per cell x family x reference x metric: diff, ci, p, n (p not yet adjusted).
    """
    rl = test[test["stage"] == "rl"]
    rows = []
    for metric in metrics:
        for cell, g in _cells(_wide(rl, metric)):
            for fam in g.columns:
                for ref in ("sft", "none"):
                    if fam == ref or ref not in g.columns or (ref == "sft" and fam == "none"):
                        continue
                    rows.append(
                        dict(
                            zip(CELL, cell), family=fam, ref=ref, metric=metric, **paired_test(g[fam], g[ref])
                        )
                    )
    return pd.DataFrame(rows)


def map_reversal(df: pd.DataFrame, sel: pd.DataFrame) -> pd.DataFrame:
    """Claim (a) per cell: the family best after SFT is not the best after RL.

    Both families are chosen on the validation seeds (``none`` excluded); on the test seeds two tests:
    post-SFT J(best_sft) - J(best_rl) and post-RL J(best_rl) - J(best_sft). When validation picks the same
    family for both, there is no reversal to test (diff NaN, outcome 'does not reproduce').
    """
    val, test = selected_rows(df, sel, "val"), selected_rows(df, sel, "test")
    rows = []
    for cell, g in val[val["family"] != "none"].groupby(CELL, sort=False):
        m = g.groupby(["stage", "family"])["J"].mean()
        best_sft, best_rl = m["sft"].idxmax(), m["rl"].idxmax()
        t = test[(test[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]
        base = dict(zip(CELL, cell), best_after_sft=best_sft, best_after_rl=best_rl)
        if best_sft == best_rl:
            rows.append(dict(base, test="none (same family)", diff=np.nan, ci=np.nan, p=np.nan, n=0))
            continue
        for stage, a, b in (("sft", best_sft, best_rl), ("rl", best_rl, best_sft)):
            w = _wide(t[t["stage"] == stage], "J").droplevel(list(range(len(CELL))))
            rows.append(dict(base, test=f"after {stage.upper()}: {a} - {b}", **paired_test(w[a], w[b])))
    return pd.DataFrame(rows)


def claim_verdicts(effects: pd.DataFrame, reversal: pd.DataFrame, k_metric: str, alpha: float = 0.05):
    """Holm over the report's whole family of tests (every effect vs sft / none, and (a)'s tests), then
    one verdict per claim and cell. Returns (effects with p_holm, reversal with p_holm, verdicts).

    ``k_metric`` is the pass@k column that claim (d) is about.
    """
    p_all = np.concatenate(
        [effects["p"].to_numpy(float), reversal["p"].to_numpy(float) if len(reversal) else []]
    )
    adj = holm(p_all)
    effects = effects.assign(p_holm=adj[: len(effects)])
    reversal = reversal.assign(p_holm=adj[len(effects) :]) if len(reversal) else reversal
    rows = []
    for key, (fam, metric, _) in MAP_CLAIMS.items():
        metric = k_metric if metric == "pass@k" else metric
        e = effects[(effects["family"] == fam) & (effects["metric"] == metric)]
        for cell, g in e.groupby(CELL, sort=False):
            g = g.set_index("ref")
            if not {"sft", "none"} <= set(g.index):
                continue
            verdict = outcome(g["diff"].tolist(), g["p_holm"].tolist(), alpha)
            rows.append(
                dict(
                    zip(CELL, cell),
                    claim=key,
                    outcome=verdict,
                    vs_sft=fmt_ci(g.at["sft", "diff"], g.at["sft", "ci"]),
                    vs_none=fmt_ci(g.at["none", "diff"], g.at["none", "ci"]),
                    p_holm=f"{g.at['sft', 'p_holm']:.2g} / {g.at['none', 'p_holm']:.2g}",
                )
            )
    for cell, g in reversal.groupby(CELL, sort=False) if len(reversal) else []:
        verdict = "does not reproduce" if g["diff"].isna().all() else outcome(g["diff"], g["p_holm"], alpha)
        eff = "; ".join(
            f"{t}: {fmt_ci(d, h)}" for t, d, h in zip(g["test"], g["diff"], g["ci"]) if np.isfinite(d)
        )
        rows.append(
            dict(
                zip(CELL, cell),
                claim="a",
                outcome=verdict,
                vs_sft=eff or f"validation picks {g['best_after_sft'].iloc[0]} after SFT and after RL",
                vs_none="",
                p_holm=" / ".join(f"{p:.2g}" for p in g["p_holm"] if np.isfinite(p)),
            )
        )
    return effects, reversal, pd.DataFrame(rows)


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
    effects: pd.DataFrame  # cell x family x reference x metric, with Holm-adjusted p
    reversal: pd.DataFrame  # claim (a)'s tests
    verdicts: pd.DataFrame  # claim x cell: outcome and effect sizes
    best: pd.DataFrame  # cell: best family, significantly best or not
    summary: pd.DataFrame  # claim x setting: the condition under which it reproduces


def analyse_map(df: pd.DataFrame, k: int) -> MapAnalysis:
    sel = select_configs(df, "J")
    test = selected_rows(df, sel, "test")
    effects = map_effects(test, ("J", f"pass@{k}"))
    reversal = map_reversal(df, sel)
    effects, reversal, verdicts = claim_verdicts(effects, reversal, f"pass@{k}")
    best = best_per_cell(test, "J")
    rows = []
    for (claim, setting), g in verdicts.groupby(["claim", "setting"], sort=True):
        for out in ("reproduces", "does not reproduce"):
            rows.append(
                dict(
                    claim=claim,
                    setting=setting,
                    outcome=out,
                    condition=condition(g, g["outcome"] == out),
                )
            )
    return MapAnalysis(sel, test, effects, reversal, verdicts, best, pd.DataFrame(rows))


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


def grid_edges(selected: pd.DataFrame, grids: dict[str, tuple[float, ...]]) -> pd.DataFrame:
    """Per family: how many selected configurations sit at the low / high end of the family's learning-
    rate grid (``grids``: family -> its grid; a grid of fewer than 3 values has no interior)."""
    rows = []
    for fam, g in selected.groupby("family", sort=False):
        grid = sorted(grids[fam])
        lr = g["sft_lr"].to_numpy(float)
        rows.append(
            dict(
                family=fam,
                grid=", ".join(f"{x:g}" for x in grid),
                selections=len(g),
                at_low_edge=int(np.isclose(lr, grid[0]).sum()),
                at_high_edge=int(np.isclose(lr, grid[-1]).sum()),
                interior=int((~np.isclose(lr, grid[0]) & ~np.isclose(lr, grid[-1])).sum()),
            )
        )
    return pd.DataFrame(rows)
