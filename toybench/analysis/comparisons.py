"""Per-setting comparisons (issue 4) of a ``results.csv`` frame: (a) ranking after SFT vs after RL,
(b) entropy-SFT vs CurioSFT, (c) GIFT's beta sweep, (d) PEAR levels vs SFT on off-policy data, (e) RL
steps to a threshold vs the initial mass on correct answers (theorem T5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from toybench.analysis.stats import _diff_text, _sig, ci95, fmt_ci, paired, stage_end, summary


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
