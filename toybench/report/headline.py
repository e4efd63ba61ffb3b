"""headline.md: the claims' outcomes per setting and RL stage (shared-parameter settings first), the
regime question (does a soft SFT method beat both plain and early-stopped SFT by more than the margin?),
and the sentences that say it, all computed from the map's analysis."""

from __future__ import annotations

import pandas as pd

from toybench import analysis
from toybench.analysis import MapAnalysis

SOFT_FAMILIES = ("curio", "gift", "gift_seq", "entropy_sft", "dft")
LETTERS = {"reproduces": "R", "refuted": "F", "equivalent": "E", "not testable": "N", "inconclusive": "I"}


def rl_label(algo: str, G) -> str:
    """'grpo G=4', 'dr_grpo G=16', 'exact_pg' (the infinite-sample contrast)."""
    return algo if algo == "exact_pg" else f"{algo} G={int(G)}"


def held_out_settings(a: MapAnalysis) -> list[str]:
    """Settings whose metrics are on held-out prompts (shared parameters), in the map's order."""
    t = a.test
    if "eval_prompts" not in t:
        return []
    return [s for s, g in t.groupby("setting", sort=False) if (g["eval_prompts"] == "held-out").all()]


def map_order(a: MapAnalysis) -> list[tuple]:
    """(setting, rl_algorithm, num_generations) of every map: shared-parameter settings first, sampled RL
    before exact PG within a setting."""
    maps = (
        a.verdicts[analysis.MAP].drop_duplicates()
        if len(a.verdicts)
        else a.best[analysis.MAP].drop_duplicates()
    )
    held = held_out_settings(a)
    key = lambda m: (m[0] not in held, m[1] == "exact_pg", m[2])  # noqa: E731
    settings = list(dict.fromkeys(maps["setting"]))
    return sorted(maps.itertuples(index=False, name=None), key=lambda m: (key(m), settings.index(m[0])))


def outcome_counts(a: MapAnalysis) -> pd.DataFrame:
    """One row per map: what each setting measures and, per claim, the count of cells per outcome
    (R reproduces, F refuted, E equivalent, N not testable, I inconclusive)."""
    held = held_out_settings(a)
    rows = []
    for m in map_order(a):
        v = a.verdicts[(a.verdicts[analysis.MAP] == pd.Series(m, index=analysis.MAP)).all(axis=1)]
        row = dict(
            setting=m[0],
            measures="generalisation (held-out prompts)" if m[0] in held else "optimisation (escape)",
            rl=rl_label(m[1], m[2]),
        )
        for claim in sorted(set(a.verdicts["claim"])):
            n = v[v["claim"] == claim]["outcome"].value_counts()
            row[f"({claim})"] = " ".join(f"{n[o]}{LETTERS[o]}" for o in analysis.OUTCOMES if o in n) or "-"
        rows.append(row)
    return pd.DataFrame(rows)


def soft_regime(a: MapAnalysis) -> pd.DataFrame:
    """Cells where a soft SFT method beats BOTH plain SFT (the claim's primary test reproduces) and
    early-stopped SFT (its secondary test vs ``sft_early`` reproduces), each by more than the margin:
    one row per such cell and family (empty where no regime exists)."""
    v = a.verdicts
    if not len(v) or "outcome_vs_sft_early" not in v:
        return pd.DataFrame(columns=[*analysis.CELL, "claim", "vs_sft", "vs_sft_early"])
    fam = {k: f for k, (f, _, _) in analysis.MAP_CLAIMS.items() if f in SOFT_FAMILIES}
    hit = v[
        v["claim"].isin(fam) & (v["outcome"] == "reproduces") & (v["outcome_vs_sft_early"] == "reproduces")
    ]
    return hit[[*analysis.CELL, "claim", "vs_sft", "vs_sft_early"]].reset_index(drop=True)


def family_means(a: MapAnalysis, ks: tuple[int, ...] = (1, 16, 64)) -> pd.DataFrame:
    """One row per map (``map_order``): each family's post-RL pass@k for ``ks`` at its selected
    configuration, averaged over the test seeds and the map's cells at the longest RL budget, as
    'p1 / p16 / p64'."""
    t = a.test[(a.test["stage"] == "rl") & (a.test["rl_steps"] == a.test["rl_steps"].max())]
    cols = [f"pass@{k}" if k > 1 else "J" for k in ks if k == 1 or f"pass@{k}" in t]
    m = t.groupby([*analysis.MAP, "family"], sort=False)[cols].mean()
    fams = list(dict.fromkeys(t["family"]))
    rows = []
    for key in map_order(a):
        row = dict(setting=key[0], rl=rl_label(key[1], key[2]))
        for f in fams:
            row[f] = " / ".join(f"{m.loc[(*key, f), c]:.2f}" for c in cols) if (*key, f) in m.index else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def claim_sentences(a: MapAnalysis) -> list[str]:
    """Per claim: in how many cells it reproduces / is refuted / is equivalent, under sampled RL and
    under exact PG."""
    v = a.verdicts
    out = []
    for claim in sorted(set(v["claim"])) if len(v) else []:
        parts = []
        for name, sel in (
            ("sampled RL", v["rl_algorithm"] != "exact_pg"),
            ("exact PG", v["rl_algorithm"] == "exact_pg"),
        ):
            g = v[(v["claim"] == claim) & sel]
            if not len(g):
                continue
            n = g["outcome"].value_counts()
            parts.append(
                f"under {name} it reproduces in {n.get('reproduces', 0)} of {len(g)} cells, is refuted in "
                f"{n.get('refuted', 0)}, equivalent in {n.get('equivalent', 0)}, not testable in "
                f"{n.get('not testable', 0)} and inconclusive in {n.get('inconclusive', 0)}"
            )
        out.append(f"- ({claim}): " + "; ".join(parts) + ".")
    return out


def regime_sentence(a: MapAnalysis) -> str:
    r = soft_regime(a)
    if not len(r):
        return (
            f"No cell of the map (any setting, RL stage, p0 x G x steps) has a soft SFT method beating both "
            f"plain SFT and early-stopped SFT by more than the margin ({a.margin:g} pass@1): in these toys, "
            "that regime does not exist."
        )
    cells = "; ".join(
        f"({c.claim}) `{c.setting}` {rl_label(c.rl_algorithm, c.num_generations)} err {c.wrong_demo_frac:g} "
        f"mass {c.base_correct_mass:g} RL {int(c.rl_steps)}"
        for c in r.itertuples()
    )
    return (
        f"A soft SFT method beats both plain SFT and early-stopped SFT by more than the margin "
        f"({a.margin:g} pass@1) in {len(r)} cell(s): {cells}."
    )


def headline_markdown(a: MapAnalysis, cfg: dict) -> str:
    """headline.md: the claims' outcome counts per map, the regime question and the sentences, with the
    command that produced them."""
    cmd = "toybench report" + (" --quick" if cfg.get("quick") else "")
    pipe = cfg["pipeline"]
    md = [
        f"Generated by `{cmd}` ({cfg['val_seeds']} validation + {cfg['seeds']} test seeds per cell; SFT "
        f"{pipe['sft_steps']} steps, early-stopped SFT {cfg.get('sft_early_steps', '-')}; RL "
        f"{', '.join(cfg.get('rl_algorithms', [pipe['rl_algorithm']]))} with G in "
        f"{list(cfg.get('num_generations', [pipe['num_generations']]))}; each family's configuration, SFT "
        "strength and RL step size selected on validation). Each claim is tested as the paper states it, "
        f"method -> RL vs SFT -> RL, against a minimum effect of {a.margin:g} (one Holm family per claim); "
        "cells per outcome: R reproduces, F refuted, E equivalent (no effect as large as the margin), N not "
        "testable, I inconclusive. Shared-parameter settings (held-out prompts) come first; per-prompt "
        "settings measure optimisation (escape), not generalisation.",
        "",
        analysis.markdown_table(outcome_counts(a)),
        "",
        "Post-RL pass@1 / pass@16 / pass@64 (exact per prompt from the policy) of each family at its "
        "selected configuration, test seeds, mean over the map's cells at the longest RL budget:",
        "",
        analysis.markdown_table(family_means(a)),
        "",
        *claim_sentences(a),
        "",
        regime_sentence(a),
    ]
    return "\n".join(md) + "\n"


def best_table(a: MapAnalysis, ks: tuple[int, ...] = (16, 64)) -> pd.DataFrame:
    """Per cell at the longest RL budget (maps in ``map_order``): the best family by mean post-RL pass@1
    on the test seeds, its pass@1 and its pass@k for ``ks`` (where recorded)."""
    b = a.best[a.best["rl_steps"] == a.best["rl_steps"].max()]
    t = a.test[a.test["stage"] == "rl"]
    order = {m: i for i, m in enumerate(map_order(a))}
    b = b.assign(_o=[order.get(m, len(order)) for m in zip(*(b[c] for c in analysis.MAP))]).sort_values(
        ["_o", "base_correct_mass", "wrong_demo_frac"], kind="stable"
    )
    rows = []
    for r in b.itertuples():
        g = t[
            (t[analysis.CELL] == pd.Series([getattr(r, c) for c in analysis.CELL], index=analysis.CELL)).all(
                axis=1
            )
        ]
        g = g[g["family"] == r.best]
        row = dict(
            setting=r.setting,
            rl=rl_label(r.rl_algorithm, r.num_generations),
            teacher_error=f"{r.wrong_demo_frac:g}",
            base_mass=f"{r.base_correct_mass:g}",
            best=r.best + ("*" if r.significant else ""),
            pass1=f"{r.best_J:.3f}",
        )
        for k in ks:
            if f"pass@{k}" in g:
                row[f"pass{k}"] = f"{g[f'pass@{k}'].mean():.3f}"
        rows.append(row)
    return pd.DataFrame(rows)
