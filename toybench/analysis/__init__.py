"""Analysis of ``results.csv``: pure functions of a pandas DataFrame (no torch, no I/O).

The frame has one row per setting x method x seed x stage x step (see ``toybench.tabular.pipeline``).
Seeds index paired instances: every method of a setting sees the same environments and data
for a given seed, so method differences are computed per seed (paired) before averaging.
Confidence intervals are 95% Student-t intervals over seeds. Every sentence of a verdict is
computed from these numbers; nothing is hard-coded.

Modules, one idea each: ``stats`` (intervals, paired tests, Holm, outcomes, Markdown tables),
``comparisons`` ((d) PEAR levels vs SFT on off-policy data, (e) RL steps to a threshold vs the initial
mass on correct answers, theorem T5) and ``map_stats`` (the map: validation selection, effects against a
minimum effect, one Holm family per claim, five outcomes per cell and their conditions).
"""

from toybench.analysis.comparisons import (
    ESCAPE_BINS,
    Comparison,
    compare_escape,
    compare_pear,
    steps_to_threshold,
)
from toybench.analysis.map_stats import (
    CELL,
    MAP,
    MAP_CLAIMS,
    MIN_EFFECT,
    PRIMARY_REF,
    SECONDARY_REFS,
    SELECTION_TIE,
    MapAnalysis,
    analyse_map,
    best_per_cell,
    claim_tests,
    claim_verdicts,
    condition,
    config_scores,
    family_contrast,
    holm_family,
    map_effects,
    map_reversal,
    pear_settings,
    reversal_picks,
    reversal_tests,
    select_configs,
    selected_rows,
)
from toybench.analysis.stats import (
    OUTCOMES,
    ci95,
    fmt_ci,
    holm,
    markdown_table,
    outcome,
    paired,
    paired_test,
    stage_end,
    summary,
    tost,
)

__all__ = [
    "Comparison",
    "ci95",
    "stage_end",
    "summary",
    "paired",
    "compare_pear",
    "compare_escape",
    "steps_to_threshold",
    "fmt_ci",
    "markdown_table",
    "ESCAPE_BINS",
    "CELL",
    "MAP",
    "MAP_CLAIMS",
    "OUTCOMES",
    "MapAnalysis",
    "analyse_map",
    "best_per_cell",
    "claim_verdicts",
    "condition",
    "family_contrast",
    "map_effects",
    "map_reversal",
    "select_configs",
    "SELECTION_TIE",
    "selected_rows",
    "holm",
    "outcome",
    "paired_test",
    "tost",
    "MIN_EFFECT",
    "PRIMARY_REF",
    "SECONDARY_REFS",
    "claim_tests",
    "config_scores",
    "holm_family",
    "pear_settings",
    "reversal_picks",
    "reversal_tests",
]
