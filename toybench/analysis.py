"""Analysis of ``results.csv``: pure functions of a pandas DataFrame (no torch, no I/O).

The frame has one row per setting x method x seed x stage x step (see ``toybench.tabular.pipeline``).
Seeds index paired instances: every method of a setting sees the same environments and data
for a given seed, so method differences are computed per seed (paired) before averaging.
Confidence intervals are 95% Student-t intervals over seeds. Every sentence of a verdict is
computed from these numbers; nothing is hard-coded.

Comparisons (issue 4): (a) ranking after SFT vs after RL, (b) entropy-SFT vs CurioSFT,
(c) GIFT's beta sweep, (d) PEAR levels vs SFT on off-policy data, (e) RL steps to a
threshold vs the initial mass on correct answers (theorem T5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "Comparison",
    "ci95",
    "stage_end",
    "summary",
    "paired",
    "compare_ranking",
    "compare_entropy",
    "compare_gift",
    "compare_pear",
    "compare_escape",
    "steps_to_threshold",
    "fmt_ci",
    "markdown_table",
]


@dataclass
class Comparison:
    """One comparison: a title, a table, a verdict paragraph, and whether the claim reproduced."""

    key: str
    title: str
    table: pd.DataFrame
    paragraph: str
    reproduces: bool | None
    extra: dict = field(default_factory=dict)
    verdict: str = ""
    """Short verdict for the summary list; defaults to reproduces / does not reproduce."""

    def __post_init__(self):
        if not self.verdict:
            self.verdict = "reproduces" if self.reproduces else "does not reproduce"


def markdown_table(t: pd.DataFrame, fmt: Callable[[Any], str] = str) -> str:
    """The one Markdown-table writer: the columns as header, one line per row (the index is dropped:
    ``t.reset_index()`` keeps it), each cell written by ``fmt``, pipes escaped; no trailing newline.

    >>> print(markdown_table(pd.DataFrame({"a": [1], "b": ["x|y"]})))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    head = "| " + " | ".join(cell(c) for c in t.columns) + " |"
    sep = "|" + "---|" * len(t.columns)
    rows = ["| " + " | ".join(cell(fmt(v)) for v in r) + " |" for r in t.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def ci95(x) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval (half-width 0 for n < 2).

    >>> m, h = ci95([1.0, 2.0, 3.0]); round(m, 3), round(h, 3)
    (2.0, 2.484)
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def fmt_ci(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def stage_end(df: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Rows at the last recorded step of ``stage`` ('sft' or 'rl') for each setting and method."""
    d = df[df["stage"] == stage]
    last = d.groupby(["setting", "method"])["step"].transform("max")
    return d[d["step"] == last]


def summary(d: pd.DataFrame, metrics: list[str], by: list[str]) -> pd.DataFrame:
    """Mean and 95% CI half-width (``<metric>_ci``) of each metric over seeds, grouped by ``by``."""
    g = d.groupby(by, sort=False)[metrics]
    mean, std, n = g.mean(), g.std(ddof=1), g.count()
    t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
    half = pd.DataFrame(np.where(n >= 2, t * std / np.sqrt(n), 0.0), index=mean.index, columns=metrics)
    out = mean.join(half.add_suffix("_ci"))
    out["n"] = n[metrics[0]]
    return out.reset_index()


def paired(d: pd.DataFrame, metric: str, a: str, b: str) -> tuple[float, float, int]:
    """Mean and CI half-width of metric(a) - metric(b) over seeds present for both methods."""
    x = d[d["method"] == a].set_index("seed")[metric]
    y = d[d["method"] == b].set_index("seed")[metric]
    diff = (x - y).dropna()
    m, h = ci95(diff)
    return m, h, len(diff)


def _sig(m: float, h: float) -> int:
    """+1 / -1 when the CI excludes 0 on that side, else 0."""
    return 0 if not np.isfinite(m) or abs(m) <= h else int(np.sign(m))


def _diff_text(m: float, h: float, n: int) -> str:
    return f"{m:+.3f} (95% CI [{m - h:+.3f}, {m + h:+.3f}], {n} seeds)"


# ----------------------------------------------------------------------------- (a)
def compare_ranking(df: pd.DataFrame, setting: str, metric: str = "J") -> Comparison:
    """(a) Rank methods by ``metric`` after SFT and after RL; does the order reverse?"""
    sft = stage_end(df[df["setting"] == setting], "sft")
    rl = stage_end(df[df["setting"] == setting], "rl")
    s = summary(sft, [metric], ["method"]).set_index("method")
    r = summary(rl, [metric], ["method"]).set_index("method")
    t = pd.DataFrame(
        {
            "after SFT": [fmt_ci(s.at[m, metric], s.at[m, metric + "_ci"]) for m in s.index],
            "rank SFT": s[metric].rank(ascending=False, method="min").astype(int),
            "after RL": [fmt_ci(r.at[m, metric], r.at[m, metric + "_ci"]) for m in s.index],
            "rank RL": r[metric].reindex(s.index).rank(ascending=False, method="min").astype(int),
        },
        index=s.index,
    ).sort_values("rank RL")
    trained = [m for m in s.index if m != "none"]
    tau = stats.kendalltau(s.loc[trained, metric], r[metric].reindex(trained)).statistic
    best_sft = s.loc[trained, metric].idxmax()
    best_rl = r[metric].reindex(trained).idxmax()
    if best_sft == best_rl:
        verdict = (
            f"The best method after SFT ({best_sft}) is also the best after RL, so there is no reversal at "
            f"the top (Kendall tau between the two rankings of the {len(trained)} SFT methods: {tau:+.2f})."
        )
        rep = bool(tau < 0)
    else:
        d_sft = paired(sft, metric, best_sft, best_rl)
        d_rl = paired(rl, metric, best_rl, best_sft)
        rep = _sig(d_sft[0], d_sft[1]) > 0 and _sig(d_rl[0], d_rl[1]) > 0
        verdict = (
            f"The best method after SFT, {best_sft}, leads {best_rl} by {_diff_text(*d_sft)} in {metric} "
            f"after SFT, but after RL {best_rl} leads {best_sft} by {_diff_text(*d_rl)}; "
            f"{best_sft} ends RL ranked {int(t.at[best_sft, 'rank RL'])} of {len(t)}. Kendall tau between "
            f"the SFT and RL rankings of the {len(trained)} SFT methods: {tau:+.2f}. "
            + (
                "Both differences exclude zero: the ranking reverses."
                if rep
                else "At least one difference is within noise, so the reversal is not established."
            )
        )
    para = f"**Claim (PEAR: good SFT is not better SFT) {'reproduces' if rep else 'does not reproduce'}" + (
        f" in `{setting}`.** {verdict}"
    )
    return Comparison("a", f"(a) Ranking after SFT vs after RL: {setting}", t, para, rep, {"tau": tau})


# ----------------------------------------------------------------------------- (b)
def compare_entropy(df: pd.DataFrame, setting: str) -> Comparison:
    """(b) At the end of SFT: entropy, mass on wrong/implausible answers and coverage vs SFT."""
    sft = stage_end(df[df["setting"] == setting], "sft")
    metrics = ["entropy", "wrong_mass", "implausible_mass", "coverage"]
    methods = [m for m in sft["method"].unique() if m.startswith(("entropy_sft", "curio"))]
    rows, delta = [], {}
    for m in ["sft", *methods]:
        row = {"method": m}
        for k in metrics:
            mean, h = ci95(sft[sft["method"] == m][k])
            row[k] = fmt_ci(mean, h)
            if m != "sft":
                delta[(m, k)] = paired(sft, k, m, "sft")
        rows.append(row)
    t = pd.DataFrame(rows).set_index("method")
    ent = [m for m in methods if m.startswith("entropy_sft")]
    cur = [m for m in methods if m.startswith("curio")]
    parts, reps = [], []
    for m in ent:
        dH, dW, dI, dC = (delta[(m, k)] for k in metrics)
        ok = _sig(*dH[:2]) > 0 and (_sig(*dW[:2]) > 0 or _sig(*dI[:2]) > 0) and _sig(*dC[:2]) <= 0
        reps.append(ok)
        parts.append(
            f"{m} vs SFT: entropy {_diff_text(*dH)}, reward-0 mass {_diff_text(*dW)}, implausible mass "
            f"{_diff_text(*dI)}, coverage {_diff_text(*dC)} ({'as claimed' if ok else 'not as claimed'})."
        )
    cur_ok = None
    for m in cur:
        dH, dC = delta[(m, "entropy")], delta[(m, "coverage")]
        cur_ok = _sig(*dC[:2]) > 0
        parts.append(
            f"{m} vs SFT: entropy {_diff_text(*dH)}, coverage {_diff_text(*dC)} "
            f"({'raises useful entropy' if cur_ok else 'does not raise coverage'})."
        )
    ent_ok = bool(ent) and all(reps)
    ent_txt = f"holds for {sum(reps)} of {len(reps)} coefficients"
    cur_txt = "reproduces" if cur_ok else "does not reproduce"
    head = (
        f"**Entropy-SFT's failure mode (entropy up, mass moved to reward-0 answers, coverage not up) "
        f"{ent_txt}; CurioSFT's claim (more coverage than SFT) {cur_txt} in `{setting}`.** "
    )
    return Comparison(
        "b",
        f"(b) Entropy-SFT vs CurioSFT after SFT: {setting}",
        t,
        head + " ".join(parts),
        ent_ok and bool(cur_ok),
        verdict=f"entropy-SFT failure mode {ent_txt}; CurioSFT coverage gain {cur_txt}",
    )


# ----------------------------------------------------------------------------- (c)
def _gift_curve(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    g = d[d["kind"] == "gift"]
    s = summary(g, [metric], ["value"]).sort_values("value")
    return s.rename(columns={"value": "beta"})


def compare_gift(df: pd.DataFrame, setting: str, metrics: tuple[str, ...] = ("J", "pass@4")) -> Comparison:
    """(c) Post-RL metrics against GIFT's beta; SFT as beta = inf; peak and single-peakedness."""
    rl = stage_end(df[df["setting"] == setting], "rl")
    sft_rows = stage_end(df[df["setting"] == setting], "sft")
    curves = {m: _gift_curve(rl, m) for m in metrics}
    betas = curves[metrics[0]]["beta"].tolist()
    t = pd.DataFrame({"beta": [*betas, float("inf")]})
    for m in metrics:
        c = curves[m]
        sm, sh = ci95(rl[rl["method"] == "sft"][m])
        t[f"{m} after RL"] = [fmt_ci(a, b) for a, b in zip(c[m], c[m + "_ci"])] + [fmt_ci(sm, sh)]
    c_sft = _gift_curve(sft_rows, metrics[0])
    sm, sh = ci95(sft_rows[sft_rows["method"] == "sft"][metrics[0]])
    t[f"{metrics[0]} after SFT"] = [
        fmt_ci(a, b) for a, b in zip(c_sft[metrics[0]], c_sft[metrics[0] + "_ci"])
    ] + [fmt_ci(sm, sh)]
    t = t.set_index("beta")
    m0 = metrics[0]
    c = curves[m0]
    name = {b: n for b, n in zip(rl[rl["kind"] == "gift"]["value"], rl[rl["kind"] == "gift"]["method"])}
    top = name[betas[-1]]
    end_sft = paired(sft_rows, m0, top, "sft")
    end_rl = paired(rl, m0, top, "sft")
    y = np.append(c[m0].to_numpy(), ci95(rl[rl["method"] == "sft"][m0])[0])
    h = np.append(c[m0 + "_ci"].to_numpy(), sh)
    k = int(np.argmax(y))
    # single-peaked up to noise: no drop before the peak or rise after it larger than the CI half-widths
    tol = h[:-1] + h[1:]
    steps = np.diff(y)
    single = bool(np.all(steps[:k] >= -tol[:k]) and np.all(steps[k:] <= tol[k:]))
    peak = "inf (SFT)" if k == len(betas) else f"{betas[k]:g}"
    gain = paired(rl, m0, name[betas[k]], "sft") if k < len(betas) else (0.0, 0.0, 0)
    rep = k < len(betas) and _sig(*gain[:2]) > 0
    para = (
        f"**Claim (GIFT: a finite temperature is a better RL initialiser than SFT) "
        f"{'reproduces' if rep else 'does not reproduce'} in `{setting}`.** "
        f"Post-RL {m0} peaks at beta = {peak}"
        + (f", {_diff_text(*gain)} above SFT" if k < len(betas) else "")
        + f"; the curve is {'single-peaked' if single else 'not single-peaked'} up to the 95% CIs. "
        f"Zero-temperature end: GIFT at beta = {betas[-1]:g} minus SFT is {_diff_text(*end_sft)} after SFT "
        f"and {_diff_text(*end_rl)} after RL (GIFT tends to SFT as beta grows)."
    )
    return Comparison("c", f"(c) GIFT post-RL vs beta: {setting}", t, para, rep, {"single_peaked": single})


# ----------------------------------------------------------------------------- (d)
def compare_pear(df: pd.DataFrame, setting: str, metrics: tuple[str, ...] = ("J", "pass@4")) -> Comparison:
    """(d) PEAR (token, block, sequence) minus SFT, after SFT and after RL, paired by seed."""
    d = df[df["setting"] == setting]
    sft, rl = stage_end(d, "sft"), stage_end(d, "rl")
    levels = [m for m in d["method"].unique() if m.startswith("pear_")]
    rows, reps, parts = [], [], []
    for lvl in levels:
        row = {"method": lvl}
        for m in metrics:
            row[f"Δ{m} after SFT"] = fmt_ci(*paired(sft, m, lvl, "sft")[:2])
            row[f"Δ{m} after RL"] = fmt_ci(*paired(rl, m, lvl, "sft")[:2])
        rows.append(row)
        dk = paired(rl, metrics[-1], lvl, "sft")
        reps.append(_sig(*dk[:2]) > 0)
        parts.append(f"{lvl}: post-RL {metrics[-1]} minus SFT {_diff_text(*dk)}.")
    t = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    rep = bool(reps) and any(reps)
    para = (
        f"**Claim (PEAR improves post-RL pass@k over SFT on off-policy data) "
        f"{'reproduces' if rep else 'does not reproduce'} in `{setting}`** "
        f"({sum(reps)} of {len(reps)} levels significantly better). " + " ".join(parts)
    )
    return Comparison("d", f"(d) PEAR vs SFT on data from pi_beta: {setting}", t, para, rep)


# ----------------------------------------------------------------------------- (e)
def steps_to_threshold(df: pd.DataFrame, threshold: float, metric: str = "J") -> pd.DataFrame:
    """Per (setting, method, seed): initial RL metric and first RL step reaching ``threshold``.

    Runs that never reach it get ``steps = NaN`` and ``reached = False``.
    """
    rl = df[df["stage"] == "rl"].sort_values("step")
    rows = []
    for (s, m, seed), g in rl.groupby(["setting", "method", "seed"]):
        hit = g.loc[g[metric] >= threshold, "step"]
        rows.append(
            dict(
                setting=s,
                method=m,
                seed=seed,
                initial=float(g[metric].iloc[0]),
                steps=float(hit.iloc[0]) if len(hit) else np.nan,
                reached=bool(len(hit)),
                budget=int(g["step"].max()),
            )
        )
    return pd.DataFrame(rows)


ESCAPE_BINS = (0.0, 0.01, 0.1, 0.5, 1.0 + 1e-9)


def compare_escape(esc: pd.DataFrame, threshold: float, metric: str = "J") -> Comparison:
    """(e) Spearman correlation of RL steps-to-threshold with the initial mass on correct answers.

    ``esc`` has one row per run unit (per prompt from ``pipeline.escape_frame``, or per seed from
    ``steps_to_threshold``) with columns setting, initial, steps, reached, budget. Censored
    units (never reaching the threshold) count as budget + 1 steps, which keeps their rank
    (slowest) without inventing a value. Units are binned by initial mass on a log-like grid.
    """
    rows, parts, reps = [], [], []
    for s, g in esc.groupby("setting", sort=False):
        y = g["steps"].fillna(g["budget"] + 1)
        if g["initial"].nunique() < 2 or y.nunique() < 2:
            rho, p = float("nan"), float("nan")
        else:
            rho, p = stats.spearmanr(g["initial"], y)
        bins = pd.cut(g["initial"], ESCAPE_BINS, right=False)
        for lab, gg in g.groupby(bins, observed=True):
            ys = gg["steps"].fillna(gg["budget"] + 1)
            rows.append(
                dict(
                    setting=s,
                    initial_bin=f"[{lab.left:g}, {min(lab.right, 1):g})",
                    units=len(gg),
                    initial=fmt_ci(*ci95(gg["initial"])),
                    steps=fmt_ci(*ci95(ys), digits=1),
                    reached=f"{gg['reached'].mean():.0%}",
                )
            )
        ok = bool(rho < 0 and p < 0.05)
        reps.append(ok)
        parts.append(
            f"`{s}`: Spearman rho = {rho:+.2f} (p = {p:.1g}, {len(g)} units), "
            f"{(~g['reached'].astype(bool)).mean():.0%} never reach {metric} >= {threshold:g}."
        )
    rep = bool(reps) and all(reps)
    unit = "prompt" if "prompt" in esc.columns else "seed"
    para = (
        f"**Claim (T5, Mei et al.: less initial mass on correct answers -> longer RL plateau) "
        f"{'reproduces' if rep else 'does not reproduce in every setting'}.** Per {unit}, across methods and "
        f"seeds, RL steps to reach {metric} >= {threshold:g} against {metric} at the start of RL: "
        + " ".join(parts)
    )
    t = pd.DataFrame(rows).set_index(["setting", "initial_bin"])
    return Comparison("e", "(e) RL steps to threshold vs initial mass on correct answers", t, para, rep)


# ----------------------------------------------------------------------------- the map (issue 11)
# A map frame has one row per setting x cell x RL budget x method family x configuration x seed x stage,
# with columns CELL, ``family``, ``config_id``, ``method`` (full spec), ``split`` ('val' | 'test'),
# ``seed``, ``stage`` ('sft': end of SFT | 'rl': end of the RL budget) and the metrics.
CELL = ["setting", "wrong_demo_frac", "base_correct_mass", "rl_steps"]
OUTCOMES = ("reproduces", "does not reproduce", "inconclusive")


def select_configs(df: pd.DataFrame, metric: str = "J") -> pd.DataFrame:
    """Per cell and method family, the configuration with the best mean post-RL ``metric`` on the
    VALIDATION seeds (test rows are dropped before anything is computed; ties go to the lower config_id).

    Returns one row per cell x family: CELL, family, config_id, method, sft_lr, rl_lr, val_score.
    """
    val = df[(df["split"] == "val") & (df["stage"] == "rl")]
    keys = [*CELL, "family", "config_id"]
    extra = [c for c in ("method", "sft_lr", "rl_lr") if c in val.columns]
    score = val.groupby(keys, sort=False).agg(val_score=(metric, "mean"), **{c: (c, "first") for c in extra})
    score = score.reset_index().sort_values([*CELL, "family", "val_score", "config_id"])
    score["_rank"] = score.groupby([*CELL, "family"]).cumcount(ascending=False)
    return score[score["_rank"] == 0].drop(columns="_rank").reset_index(drop=True)


def selected_rows(df: pd.DataFrame, sel: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of ``split`` that belong to each cell's selected configuration of each family."""
    keys = [*CELL, "family", "config_id"]
    return df[df["split"] == split].merge(sel[keys], on=keys, how="inner")


def paired_test(x: pd.Series, y: pd.Series) -> dict:
    """Paired (by index = seed) difference x - y: mean, 95% CI half-width, two-sided t-test p, n."""
    d = (x - y).dropna()
    m, h = ci95(d)
    if len(d) < 2:
        p = float("nan")
    elif np.allclose(d, d.iloc[0]):
        p = 1.0 if d.iloc[0] == 0 else 0.0  # no spread: the sign is exact
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return dict(diff=m, ci=h, p=p, n=len(d))


def holm(p) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count towards the family size).

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def outcome(diffs, p_adj, alpha: float = 0.05) -> str:
    """Claim outcome from its tests (each predicts diff > 0): reproduces when every test is significantly
    positive after adjustment, does not reproduce when any is significantly negative, else inconclusive.

    >>> outcome([0.1, 0.2], [0.01, 0.02]), outcome([0.1, -0.2], [0.01, 0.02])
    ('reproduces', 'does not reproduce')
    >>> outcome([0.1, 0.2], [0.01, 0.3])
    'inconclusive'
    """
    sig = [bool(np.isfinite(p) and p < alpha) for p in p_adj]
    if any(s and d < 0 for s, d in zip(sig, diffs)):
        return "does not reproduce"
    if sig and all(s and d > 0 for s, d in zip(sig, diffs)):
        return "reproduces"
    return "inconclusive"


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
