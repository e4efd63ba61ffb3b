"""`toybench report`: every SFT method as an RL initialiser, exactly, over many seeds -> report.md.

Three separate steps (bsuite style): ``run_comparisons`` produces the raw records
(``results.csv``: one row per setting x method x seed x stage x step), ``toybench.analysis``
turns them into tables and verdicts, ``toybench.plots`` into figures, and ``write_markdown``
assembles ``report.md``. ``replot(out_dir)`` redoes the last two from the saved CSV.

Settings: ``bandit`` (per-prompt softmax, expert data on one correct answer), ``bandit_shared``
(log-linear policy, SFT and RL on disjoint prompts), ``tree`` (reasoning-tree token MDP, expert
data on one strategy) and ``tree_offpolicy`` (the same tree, data rejection-sampled from
pi_beta != pi_base: PEAR's setting).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from toybench import analysis, plots
from toybench.config import fill_defaults, prepare_out_dir, require
from toybench.methods import Method
from toybench.tabular.bandit import MultiAnswerBandit, SharedBandit
from toybench.tabular.envs import Scenario
from toybench.tabular.pipeline import PipelineConfig, run_method
from toybench.tabular.tree import ReasoningTree
from toybench.theorems import TheoremsConfig, run_theorems, theorems_markdown
from toybench.tiny.config import TinyConfig, quick_config

__all__ = [
    "ReportConfig",
    "run_report",
    "replot",
    "run_map",
    "resolve",
    "analyse_map",
    "SETTINGS",
    "FAMILIES",
]

SETTINGS = ("bandit", "bandit_shared", "tree", "tree_offpolicy")
FAMILIES = ("none", "sft", "dft", "curio", "entropy_sft", "gift", "pear")


@dataclass
class ReportConfig:
    """The main job: theorems + the map of SFT methods as RL initialisers (CPU, minutes).

    The map sweeps the teacher's error rate, the base's mass on correct answers and the RL budget;
    every method family gets the same number K of configurations (``lr_grid`` / ``knob_lrs`` x its
    knob), one is selected per cell on the validation seeds, and every reported number comes from the
    disjoint test seeds. The SFT budget and RL settings are ``pipeline`` (``--pipeline.sft-steps``, ...;
    its ``rl_steps``, ``sft_lr`` and ``rl_lr`` are set by ``rl_budgets`` and the tuning grid).
    """

    out: Path = Path("out/report")
    """Output directory (report.md, headline.md, results.csv, config.json, figures)."""
    quick: bool = False
    """Smoke-test preset: a small grid, few seeds, short budgets; also the quick theorems and
    tiny-transformer settings. It fills only the fields you leave at their defaults: a flag you type wins."""
    seeds: int = 10
    """Test seeds per cell (every reported number and CI is over these)."""
    val_seeds: int = 5
    """Validation seeds per cell (configurations are selected on these only; disjoint from the test seeds)."""
    scale: Literal["toy", "transformer"] = "toy"
    """'transformer' adds the tiny-transformer section to the toy scales."""
    skip_theorems: bool = False
    """Do not run the theorems section."""
    seed: int = 0
    """First seed: validation seeds are seed .. seed+val_seeds-1, test seeds the next ``seeds``; also sets
    ``pipeline.grpo_seed``, ``theorems.seed``, ``tiny.task_seed`` and ``tiny.pretrain_seed``."""
    settings: tuple[str, ...] = SETTINGS
    """Settings to run (subset of bandit, bandit_shared, tree, tree_offpolicy)."""
    methods: tuple[str, ...] = FAMILIES
    """Method families to run (none, sft, dft, curio, entropy_sft, gift, pear; pear only in the trees)."""
    wrong_demo_fracs: tuple[float, ...] = (0.0, 0.2, 0.4)
    """Map axis: fraction of prompts whose demonstrations are the teacher's mistake."""
    base_correct_masses: tuple[float, ...] = (0.005, 0.1)
    """Map axis: pi_base's mass on correct answers (settings whose builder has no such knob run at their
    native base, whose measured mass is what the results record)."""
    rl_budgets: tuple[int, ...] = (20, 80)
    """Map axis: RL steps (each budget is a prefix of the longest run, so budgets cost nothing extra)."""
    lr_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    """Learning rates of families without a knob: SFT's for sft and dft, RL's for none (K = its length)."""
    knob_lrs: tuple[float, ...] = (0.5, 2.0)
    """SFT learning rates crossed with each knob (len(knob_lrs) x len(knob values) must equal K)."""
    gift_betas: tuple[float, ...] = (2.0, 8.0)
    """GIFT's knob: inverse temperature (SFT is beta = inf)."""
    entropy_coefs: tuple[float, ...] = (0.1, 0.3)
    """Entropy-SFT's knob: the entropy coefficient."""
    curio_alphas: tuple[float, ...] = (0.5, 1.0)
    """CurioSFT's knob: alpha."""
    pear_levels: tuple[str, ...] = ("token", "block")
    """PEAR's knob: the level (blocks of 2 tokens: at the tree's horizon of 4 the default block of 4 is the
    sequence level); run in the token-MDP settings only."""
    eval_samples: int = 64
    """Samples per prompt that the exact pass@k stands for; every k of pipeline.pass_k must be <= this."""
    headline_k: int = 4
    """The pass@k of claim (d) and of the tables (must be in pipeline.pass_k)."""
    reward_threshold: float = 0.9
    """Comparison (e): RL steps until the per-prompt pass@1 reaches this."""
    error_unit: Literal["prompt", "demo"] = "prompt"
    """Whether teacher mistakes are per prompt (systematic) or per demonstration (independent)."""
    demos_per_prompt: int = 8
    """Demonstrations per SFT prompt."""
    bandit_prompts: int = 16
    """Bandit: prompts."""
    bandit_V: int = 32
    """Bandit: answers per prompt."""
    bandit_correct: int = 3
    """Bandit: correct answers per prompt."""
    shared_prompts: int = 32
    """Shared bandit: prompts in total (SFT and RL halves are disjoint)."""
    shared_V: int = 16
    """Shared bandit: answers per prompt."""
    shared_d: int = 8
    """Shared bandit: feature dimension."""
    tree_prompts: int = 8
    """Token MDP: prompts."""
    tree_V: int = 5
    """Token MDP: vocabulary (= number of strategies)."""
    tree_H: int = 4
    """Token MDP: horizon (strategy, H-2 execution tokens, answer)."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """SFT budget and RL settings of every SFT -> RL run (rl_steps, sft_lr, rl_lr: see above)."""
    theorems: TheoremsConfig = field(default_factory=TheoremsConfig)
    """The theorems section (its ``out`` is OUT/theorems, its ``quick`` follows ``--quick``)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """The tiny-transformer section (``--scale transformer``); ``tiny.seeds`` training seeds per method."""


# The --quick preset: it replaces only the fields the user left at their defaults.
QUICK = dict(
    seeds=4,
    val_seeds=3,
    rl_budgets=(6, 16),
    lr_grid=(0.5, 2.0),
    knob_lrs=(1.0,),
    bandit_prompts=8,
    tree_prompts=4,
    tree_V=4,
)
QUICK_PIPELINE = dict(sft_steps=8)


def resolve(cfg: ReportConfig) -> ReportConfig:
    """Apply the quick preset, forward the seed, and validate the whole config before anything runs.

    A bad field raises ValueError naming it (nested ones as ``pipeline.x``, ``theorems.x``, ``tiny.x``);
    the CLI turns the name into the flag (``--pipeline.x``).
    """
    tiny = cfg.tiny
    if cfg.quick:
        cfg = dataclasses.replace(
            fill_defaults(cfg, QUICK), pipeline=fill_defaults(cfg.pipeline, QUICK_PIPELINE)
        )
        tiny = fill_defaults(tiny, {f.name: getattr(QUICK_TINY, f.name) for f in dataclasses.fields(tiny)})
    _validate_fields(cfg)
    cfg = dataclasses.replace(
        cfg,
        rl_budgets=tuple(sorted(set(cfg.rl_budgets))),
        pipeline=dataclasses.replace(cfg.pipeline, grpo_seed=cfg.seed, rl_steps=max(cfg.rl_budgets)),
        theorems=dataclasses.replace(
            cfg.theorems, out=Path(cfg.out) / "theorems", quick=cfg.quick or cfg.theorems.quick, seed=cfg.seed
        ),
        tiny=dataclasses.replace(tiny, task_seed=cfg.seed, pretrain_seed=cfg.seed),
    )
    require(cfg.tiny, at_least={"seeds": 2}, prefix="tiny.")
    _validate_grid(cfg)
    cfg.pipeline.validate(prefix="pipeline.")
    try:
        cfg.theorems.resolved()
    except ValueError as err:
        raise ValueError(f"theorems.{err}") from None
    pass_k = cfg.pipeline.pass_k
    if max(pass_k) > cfg.eval_samples:
        raise ValueError(
            f"pipeline.pass_k: k = {max(pass_k)} is larger than eval_samples = {cfg.eval_samples}"
        )
    if cfg.headline_k not in pass_k:
        raise ValueError(f"headline_k = {cfg.headline_k} must be one of pipeline.pass_k = {pass_k}")
    return cfg


QUICK_TINY = quick_config()


def _validate_fields(cfg: ReportConfig) -> None:
    """The report's own scalar fields and lists (before the seed is forwarded)."""
    # confidence intervals need two test seeds; selection needs one validation seed
    require(
        cfg,
        non_negative=("seed",),
        at_least=dict(
            seeds=2, val_seeds=1, eval_samples=1, headline_k=1, demos_per_prompt=1, bandit_prompts=1,
            bandit_V=2, bandit_correct=1, shared_prompts=2, shared_V=2, shared_d=1, tree_prompts=1,
            tree_V=2, tree_H=3,
        ),
    )  # fmt: skip
    if not cfg.bandit_correct < cfg.bandit_V:
        raise ValueError(f"bandit_correct must be < bandit_V = {cfg.bandit_V}, got {cfg.bandit_correct}")
    if cfg.tree_V**cfg.tree_H > 2_000_000:
        raise ValueError(f"tree_H: tree_V**tree_H = {cfg.tree_V**cfg.tree_H} leaves is too many to enumerate")
    if not 0 < cfg.reward_threshold <= 1:
        raise ValueError(f"reward_threshold must be in (0, 1], got {cfg.reward_threshold}")
    if not cfg.rl_budgets or not min(cfg.rl_budgets) >= 1:
        raise ValueError(f"rl_budgets must be positive RL step counts, got {cfg.rl_budgets}")
    for s in cfg.settings:
        if s not in SETTINGS:
            raise ValueError(f"settings: unknown setting {s!r}; choose from {SETTINGS}")
    for m in cfg.methods:
        if m not in FAMILIES:
            raise ValueError(f"methods: unknown method family {m!r}; choose from {FAMILIES}")
    if not {"sft", "none"} <= set(cfg.methods):
        raise ValueError("methods must include 'sft' and 'none' (every claim is tested against both)")
    inf = float("inf")
    grids = dict(  # name: (low, high, whether low itself is allowed)
        wrong_demo_fracs=(0.0, 1.0, True),
        base_correct_masses=(1e-6, 1 - 1e-6, True),
        lr_grid=(0.0, inf, False),
        knob_lrs=(0.0, inf, False),
        gift_betas=(0.0, inf, False),
        entropy_coefs=(0.0, inf, True),
        curio_alphas=(0.0, inf, True),
    )
    for name, (lo, hi, closed) in grids.items():
        grid = getattr(cfg, name)
        if not grid or not all((lo <= x if closed else lo < x) and x <= hi for x in grid):
            rule = f"{'>=' if closed else '>'} {lo:g}" if hi == inf else f"in [{lo:g}, {hi:g}]"
            raise ValueError(f"{name} must be non-empty values {rule}, got {grid}")
    for lvl in cfg.pear_levels:
        if lvl not in ("token", "block", "sequence"):
            raise ValueError(f"pear_levels: unknown level {lvl!r}; choose from token, block, sequence")


def _validate_grid(cfg: ReportConfig) -> None:
    """Every family gets K configurations and every one of them parses as a method."""
    for s in cfg.settings:
        for fam, configs in tuning_grid(cfg, s).items():
            if len(configs) != len(cfg.lr_grid):
                raise ValueError(
                    f"knob_lrs: {fam} gets {len(configs)} configurations, not K = len(lr_grid) = "
                    f"{len(cfg.lr_grid)} (len(knob_lrs) x the number of knob values must equal K)"
                )
            for spec, *_ in configs:
                try:
                    Method.parse(spec)
                except ValueError as err:
                    raise ValueError(f"methods: {err}") from None


def tuning_grid(cfg: ReportConfig, setting: str) -> dict[str, list[tuple[str, float, float]]]:
    """family -> its K configurations (full method spec, SFT lr, RL lr), the same K for every family.

    ``none`` has no SFT, so its K are RL learning rates (``lr_grid``); ``sft`` and ``dft`` have no knob,
    so theirs are SFT learning rates (``lr_grid``); the others cross ``knob_lrs`` with their knob.
    Families that need a token MDP (pear) are skipped in the bandits.
    """
    rl_lr = cfg.pipeline.rl_lr
    knobs = {
        "gift": [f"gift@{b:g}" for b in cfg.gift_betas],
        "entropy_sft": [f"entropy_sft@{c:g}" for c in cfg.entropy_coefs],
        "curio": [f"curio,alpha={a:g}" for a in cfg.curio_alphas],
        "pear": [f"pear_{lvl}" + (",block_size=2" if lvl == "block" else "") for lvl in cfg.pear_levels],
    }
    out = {}
    for fam in cfg.methods:
        if fam == "pear" and not setting.startswith("tree"):
            continue
        if fam == "none":
            out[fam] = [("none", cfg.pipeline.sft_lr, lr) for lr in cfg.lr_grid]
        elif fam in ("sft", "dft"):
            out[fam] = [(fam, lr, rl_lr) for lr in cfg.lr_grid]
        else:
            out[fam] = [(spec, lr, rl_lr) for spec in knobs[fam] for lr in cfg.knob_lrs]
    return out


def _accepts(cls, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def make_scenario(
    cfg: ReportConfig,
    setting: str,
    seeds: list[int],
    wrong_demo_frac: float = 0.2,
    base_correct_mass: float | None = 0.1,
) -> Scenario:
    """Build one setting for the given seeds at one cell of the map (other knobs from the config).

    ``base_correct_mass`` is passed only to builders that take it (None: the builder's own default).
    """
    cls = {"bandit": MultiAnswerBandit, "bandit_shared": SharedBandit}.get(setting, ReasoningTree)
    data = dict(
        wrong_demo_frac=wrong_demo_frac, demos_per_prompt=cfg.demos_per_prompt, error_unit=cfg.error_unit
    )
    if base_correct_mass is not None and _accepts(cls, "base_correct_mass"):
        data["base_correct_mass"] = base_correct_mass
    if setting == "bandit":
        return cls(seeds, cfg.bandit_prompts, cfg.bandit_V, cfg.bandit_correct, **data)
    if setting == "bandit_shared":
        return cls(seeds, cfg.shared_prompts, cfg.shared_prompts // 2, cfg.shared_V, cfg.shared_d, **data)
    source = "behavior" if setting == "tree_offpolicy" else "expert"
    return cls(seeds, cfg.tree_prompts, cfg.tree_V, cfg.tree_H, data_source=source, **data)


def concat_scenarios(scs: list[Scenario]) -> Scenario:
    """One scenario whose seeds are those of ``scs`` in order (same geometry and prompt split), so one
    vectorised run covers every cell of the map. Per-seed tensors are concatenated along dim 0."""
    first = scs[0]
    out = {}
    for f in dataclasses.fields(first):
        vals = [getattr(s, f.name) for s in scs]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor) and f.name.endswith("prompts"):  # shared across seeds
            if not all(torch.equal(v, v0) for v in vals):
                raise ValueError(f"concat_scenarios: {f.name} differs between scenarios")
            out[f.name] = v0
        elif isinstance(v0, torch.Tensor) and v0.dim() > 0 and v0.shape[0] == first.num_seeds:
            out[f.name] = torch.cat(vals)
        else:
            out[f.name] = v0
    return Scenario(**out)


def map_cells(cfg: ReportConfig, setting: str) -> list[tuple[float, float | None]]:
    """(wrong_demo_frac, base_correct_mass) of every cell; mass None where the builder has no such knob."""
    cls = {"bandit": MultiAnswerBandit, "bandit_shared": SharedBandit}.get(setting, ReasoningTree)
    masses = cfg.base_correct_masses if _accepts(cls, "base_correct_mass") else (None,)
    return [(w, m) for w in cfg.wrong_demo_fracs for m in masses]


def run_map(cfg: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every family x configuration on every setting, vectorised over cells x seeds (one run each).

    Returns the map frame (results.csv: one row per setting x cell x RL budget x configuration x seed x
    stage, stage 'sft' = end of SFT, 'rl' = end of the budget) and the per-prompt RL escape times of the
    longest budget (escape.csv).
    """
    torch.manual_seed(cfg.seed)  # nothing below draws from the global generator; set for safety
    n_val = cfg.val_seeds
    seeds = list(range(cfg.seed, cfg.seed + n_val + cfg.seeds))
    S = len(seeds)
    frames, escapes = [], []
    jobs = [
        (s, fam, i, c)
        for s in cfg.settings
        for fam, cs in tuning_grid(cfg, s).items()
        for i, c in enumerate(cs)
    ]
    scenarios, cells = {}, {}
    for setting, fam, cid, (spec, sft_lr, rl_lr) in tqdm(jobs, desc="map", unit="run"):
        if setting not in scenarios:
            cells[setting] = map_cells(cfg, setting)
            scenarios[setting] = concat_scenarios(
                [make_scenario(cfg, setting, seeds, w, m) for w, m in cells[setting]]
            )
        sc, cl = scenarios[setting], cells[setting]
        pipe = dataclasses.replace(cfg.pipeline, sft_lr=sft_lr, rl_lr=rl_lr)
        df = run_method(sc, spec, pipe, escape_threshold=cfg.reward_threshold)
        esc = df.attrs.pop("escape")
        end_sft = df[(df["stage"] == "sft") & (df["step"] == pipe.sft_steps)]
        parts = []
        for b in cfg.rl_budgets:
            parts += [
                end_sft.assign(rl_steps=b),
                df[(df["stage"] == "rl") & (df["step"] == b)].assign(rl_steps=b),
            ]
        d = pd.concat(parts, ignore_index=True)
        meta = dict(setting=setting, family=fam, config_id=cid, sft_lr=sft_lr, rl_lr=rl_lr)
        for frame in (d, esc):
            idx = frame["seed"].to_numpy()
            frame["wrong_demo_frac"] = [cl[i // S][0] for i in idx]
            frame["base_correct_mass"] = [cl[i // S][1] for i in idx]
            frame["split"] = np.where(idx % S < n_val, "val", "test")
            frame["seed"] = [seeds[i % S] for i in idx]
            for k, v in meta.items():
                frame[k] = v
            frame["method"] = str(Method.parse(spec))
        frames.append(d)
        escapes.append(esc.assign(rl_steps=max(cfg.rl_budgets)))
    out, esc = pd.concat(frames, ignore_index=True), pd.concat(escapes, ignore_index=True)
    # Where the builder has no base_correct_mass knob, record the base's measured mass on correct answers.
    for setting in cfg.settings:
        rows = out["setting"] == setting
        if out.loc[rows, "base_correct_mass"].isna().any():
            base = out[rows & (out["family"] == "none") & (out["config_id"] == 0) & (out["stage"] == "sft")]
            mass = round(float(base["J"].mean()), 3)
            out.loc[rows, "base_correct_mass"] = mass
            esc.loc[esc["setting"] == setting, "base_correct_mass"] = mass
    front = [
        *analysis.CELL,
        "family",
        "method",
        "config_id",
        "sft_lr",
        "rl_lr",
        "split",
        "seed",
        "stage",
        "step",
    ]
    out = out[front + [c for c in out.columns if c not in front]]
    return out, esc.astype({"base_correct_mass": float})


# ----------------------------------------------------------------------------- analysis of the map
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
    sel = analysis.select_configs(df, "J")
    test = analysis.selected_rows(df, sel, "test")
    effects = analysis.map_effects(test, ("J", f"pass@{k}"))
    reversal = analysis.map_reversal(df, sel)
    effects, reversal, verdicts = analysis.claim_verdicts(effects, reversal, f"pass@{k}")
    best = analysis.best_per_cell(test, "J")
    rows = []
    for (claim, setting), g in verdicts.groupby(["claim", "setting"], sort=True):
        for out in ("reproduces", "does not reproduce"):
            rows.append(
                dict(
                    claim=claim,
                    setting=setting,
                    outcome=out,
                    condition=analysis.condition(g, g["outcome"] == out),
                )
            )
    return MapAnalysis(sel, test, effects, reversal, verdicts, best, pd.DataFrame(rows))


def _cell_label(r) -> str:
    return f"err {r.wrong_demo_frac:g}, mass {r.base_correct_mass:g}, RL {int(r.rl_steps)}"


def selected_table(a: MapAnalysis, setting: str) -> pd.DataFrame:
    """Rows: cells; columns: families; entries: the selected configuration ('selected: ...')."""
    s = a.selected[a.selected["setting"] == setting].copy()
    s["cell"] = [_cell_label(r) for r in s.itertuples()]
    s["config"] = [
        f"{m} (sft_lr {lr:g})" if f != "none" else f"rl_lr {rl:g}"
        for m, f, lr, rl in zip(s["method"], s["family"], s["sft_lr"], s["rl_lr"])
    ]
    t = s.pivot_table(index="cell", columns="family", values="config", aggfunc="first", sort=False)
    return t.reset_index()


def effects_table(a: MapAnalysis, setting: str, metric: str = "J") -> pd.DataFrame:
    """Rows: cell x family; post-RL test mean, effect vs sft and vs none (95% CI, Holm p)."""
    t = a.test[(a.test["setting"] == setting) & (a.test["stage"] == "rl")]
    means = t.groupby([*analysis.CELL, "family"], sort=False)[metric].apply(
        lambda x: analysis.fmt_ci(*analysis.ci95(x))
    )
    e = a.effects[(a.effects["setting"] == setting) & (a.effects["metric"] == metric)]
    rows = []
    for key, val in means.items():
        r = dict(zip([*analysis.CELL, "family"], key))
        row = {"cell": _cell_label(pd.Series(r)), "method": r["family"], f"post-RL {metric} (test)": val}
        for ref in ("sft", "none"):
            m = e[(e[analysis.CELL + ["family"]] == pd.Series(r)).all(axis=1) & (e["ref"] == ref)]
            row[f"vs {ref}"] = (
                f"{analysis.fmt_ci(m['diff'].iloc[0], m['ci'].iloc[0])} (p_holm {m['p_holm'].iloc[0]:.2g})"
                if len(m)
                else ""
            )
        rows.append(row)
    return pd.DataFrame(rows)


def headline_markdown(a: MapAnalysis, cfg: dict) -> str:
    """headline.md: best method per cell and the claims' conditions, with the command that produced them."""
    cmd = "toybench report" + (" --quick" if cfg.get("quick") else "")
    md = [
        f"Generated by `{cmd}` ({cfg['val_seeds']} validation + {cfg['seeds']} test seeds per cell, "
        f"K = {len(cfg['lr_grid'])} configurations per method selected on validation; "
        f"SFT {cfg['pipeline']['sft_steps']} steps, RL {cfg['pipeline']['rl_algorithm']}). Post-RL pass@1 on "
        "the test seeds; effects paired by seed with 95% CIs; * = significantly best (Holm within the cell).",
        "",
    ]
    b = a.best.copy()
    e = a.effects[a.effects["metric"] == "J"]

    def eff(r, ref):
        if r.best == ref:
            return "-"
        m = e[
            (e[analysis.CELL] == pd.Series(r._asdict())[analysis.CELL]).all(axis=1) & (e["family"] == r.best)
        ]
        m = m[m["ref"] == ref]
        return analysis.fmt_ci(m["diff"].iloc[0], m["ci"].iloc[0]) if len(m) else "-"

    rows = [
        dict(
            setting=r.setting,
            teacher_error=f"{r.wrong_demo_frac:g}",
            base_mass=f"{r.base_correct_mass:g}",
            rl_steps=int(r.rl_steps),
            best=r.best + ("*" if r.significant else ""),
            pass1=f"{r.best_J:.3f}",
            vs_sft=eff(r, "sft") if r.best != "none" else "-",
            vs_none=eff(r, "none"),
        )
        for r in b.itertuples()
    ]
    # vs sft for best == none: none - sft is the negative of the stored sft - none
    for row, r in zip(rows, b.itertuples()):
        if r.best == "none":
            m = e[
                (e[analysis.CELL] == pd.Series(r._asdict())[analysis.CELL]).all(axis=1)
                & (e["family"] == "sft")
            ]
            m = m[m["ref"] == "none"]
            row["vs_sft"] = analysis.fmt_ci(-m["diff"].iloc[0], m["ci"].iloc[0]) if len(m) else "-"
    md += [
        analysis.markdown_table(pd.DataFrame(rows)),
        "",
        "Claims (computed from the per-cell verdicts):",
        "",
    ]
    for r in a.summary[a.summary["outcome"] == "reproduces"].itertuples():
        md.append(f"- ({r.claim}) `{r.setting}`: reproduces {r.condition}.")
    return "\n".join(md) + "\n"


CLAIM_TEXT = {
    "a": "The method best after SFT is not the best after RL (PEAR: good SFT is not better SFT)",
    **{k: v[2] for k, v in analysis.MAP_CLAIMS.items()},
}


def make_figures(df: pd.DataFrame, cfg: dict, out: Path, a: MapAnalysis, esc: pd.DataFrame | None) -> None:
    for s in dict.fromkeys(df["setting"]):
        plots.plot_map(a.best[a.best["setting"] == s], a.effects[a.effects["setting"] == s], s, out)
    if esc is not None and len(esc):
        plots.plot_escape(esc, out, cfg["reward_threshold"])


def _escape_selected(esc: pd.DataFrame, a: MapAnalysis) -> pd.DataFrame:
    """Escape rows of the selected configurations (longest budget), test seeds only."""
    sel = a.selected[a.selected["rl_steps"] == a.selected["rl_steps"].max()]
    keys = ["setting", "wrong_demo_frac", "base_correct_mass", "family", "config_id"]
    e = esc[esc["split"] == "test"].merge(sel[keys], on=keys, how="inner")
    return e


def write_markdown(
    df: pd.DataFrame, cfg: dict, out: Path, extra: dict[str, str], esc: pd.DataFrame | None = None
) -> Path:
    """Assemble report.md and headline.md from the map frame, the resolved config and optional sections."""
    k = cfg["headline_k"]
    a = analyse_map(df, k)
    if esc is not None:
        esc = _escape_selected(esc, a)
    make_figures(df, cfg, out, a, esc)
    pipe = cfg["pipeline"]
    settings = list(dict.fromkeys(df["setting"]))
    headline = headline_markdown(a, cfg)
    (out / "headline.md").write_text(headline)
    md = [
        "# When does each SFT method make RL work best? (toybench report)",
        "",
        f"Exact tabular map of SFT methods as RL initialisers: {len(settings)} settings "
        f"({', '.join(settings)}), teacher error {list(cfg['wrong_demo_fracs'])} (fraction of prompts, "
        f"{cfg['error_unit']}-level), base mass on correct answers {list(cfg['base_correct_masses'])}, RL "
        f"budgets {list(cfg['rl_budgets'])} steps ({pipe['rl_algorithm']}), SFT {pipe['sft_steps']} steps, "
        f"{df['family'].nunique()} method families with K = {len(cfg['lr_grid'])} configurations each "
        "(learning rate x the method's knob; `none` gets K RL learning rates, `sft`/`dft` K SFT learning "
        "rates). Per cell, each family's configuration is selected by mean post-RL pass@1 on "
        f"{cfg['val_seeds']} validation seeds; every number below comes from {cfg['seeds']} disjoint test "
        "seeds. Metrics are exact expectations; effects are paired by seed with 95% Student-t intervals and "
        "two-sided paired t-tests, Holm-Bonferroni-adjusted over the report's whole family of tests. "
        "Outcomes: reproduces (every test significantly in the claimed direction), does not reproduce (one "
        "significantly against), inconclusive (otherwise). Raw records: `results.csv`; "
        "config: `config.json`; re-plot with `toybench plot DIR`.",
        "",
        "Generalisation: every setting here evaluates on its RL training prompts except `bandit_shared` "
        "(log-linear, SFT and RL on disjoint prompts, metrics on the RL prompts); held-out RL prompts are "
        "reported only where the environment provides them.",
        "",
        "## Headline (also `headline.md`)",
        "",
        headline,
        "## Claims: where they reproduce",
        "",
    ]
    for claim, g in a.summary.groupby("claim", sort=True):
        md += [f"**({claim}) {CLAIM_TEXT[claim]}.**", ""]
        for r in g.itertuples():
            md.append(f"- `{r.setting}`: {r.outcome} {r.condition}.")
        md.append("")
    n_tests = int(
        np.isfinite(a.effects["p"]).sum() + (np.isfinite(a.reversal["p"]).sum() if len(a.reversal) else 0)
    )
    md += [f"Holm family: {n_tests} paired tests.", ""]
    if extra.get("theorems"):
        text = extra["theorems"].strip()
        md += ([] if text.startswith("## ") else ["## Theorems", ""]) + [text, ""]
    for s in settings:
        md += [f"## Map: `{s}`", ""]
        if (out / f"map_{s}.png").exists():
            md += [f"![map {s}](map_{s}.png)", ""]
        v = a.verdicts[a.verdicts["setting"] == s].copy()
        v["cell"] = [_cell_label(r) for r in v.itertuples()]
        md += [
            "### Verdicts per cell",
            "",
            analysis.markdown_table(v[["claim", "cell", "outcome", "vs_sft", "vs_none", "p_holm"]]),
            "",
            "### Effects vs `sft` and vs `none` (post-RL pass@1, test seeds)",
            "",
            analysis.markdown_table(effects_table(a, s)),
            "",
            "### Selected configurations (validation seeds)",
            "",
            "selected: "
            + "; ".join(
                f"{r.family} -> {r.method}"
                + (f" sft_lr {r.sft_lr:g}" if r.family != "none" else f" rl_lr {r.rl_lr:g}")
                + f" [{_cell_label(r)}]"
                for r in a.selected[a.selected["setting"] == s].itertuples()
            ),
            "",
            analysis.markdown_table(selected_table(a, s)),
            "",
        ]
    if esc is not None and len(esc):
        c = analysis.compare_escape(esc, cfg["reward_threshold"])
        md += [f"## {c.title}", "", analysis.markdown_table(c.table.reset_index()), "", c.paragraph, ""]
        if (out / "fig_e_escape.png").exists():
            md += ["![escape](fig_e_escape.png)", ""]
    if extra.get("transformer"):
        md += [extra["transformer"].strip(), ""]
    if cfg.get("timing"):
        md += ["## Timing", "", ", ".join(f"{k_}: {v:.1f} s" for k_, v in cfg["timing"].items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


# ----------------------------------------------------------------------------- entry points
def _theorems_section(cfg: ReportConfig) -> str:
    return theorems_markdown(run_theorems(cfg.theorems), "theorems")


def run_report(cfg: ReportConfig) -> Path:
    """Run theorems (unless skipped), the comparisons and (scale='transformer') the tiny transformer.

    Writes report.md, results.csv, config.json and PNG figures to ``cfg.out``; returns report.md's path.
    """
    cfg = resolve(cfg)
    out = prepare_out_dir(cfg.out, "out")  # before any computation: a bad --out fails at once
    # One thread: the tensors are small, and extra OpenMP threads slow it ~10x on busy cores (measured).
    torch.set_num_threads(1)
    timing, extra = {}, {}
    resolved = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))  # paths as strings
    (out / "config.json").write_text(json.dumps(resolved, indent=2))
    if not cfg.skip_theorems:
        t0 = time.perf_counter()
        extra["theorems"] = _theorems_section(cfg)
        timing["theorems"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    df, esc = run_map(cfg)
    timing["comparisons"] = time.perf_counter() - t0
    df.to_csv(out / "results.csv", index=False, float_format="%.6g")
    esc.to_csv(out / "escape.csv", index=False, float_format="%.6g")
    if cfg.scale == "transformer":
        from toybench.tiny.scale import run_transformer_section

        t0 = time.perf_counter()
        extra["transformer"] = run_transformer_section(out, cfg.quick, cfg.tiny.seeds, cfg=cfg.tiny)[0]
        timing["transformer"] = time.perf_counter() - t0
    for key, text in extra.items():  # kept so that replot can rebuild report.md without re-running
        (out / f"section_{key}.md").write_text(text)
    resolved["timing"] = timing
    (out / "config.json").write_text(json.dumps(resolved, indent=2))
    replot(out)  # the report is a function of the saved records only, so replot gives the same file
    path = out / "report.md"
    print(f"report: {path}  ({', '.join(f'{k}: {v:.1f} s' for k, v in timing.items())})")
    return path


def replot(out_dir: Path) -> None:
    """Rebuild the figures and report.md of a finished run from results.csv and config.json."""
    out = Path(out_dir)
    if not (out / "results.csv").exists():
        raise ValueError(f"out_dir {out} has no results.csv (run `toybench report --out {out}` first)")
    df = _read(out / "results.csv", pd.read_csv)
    cfg = _read(out / "config.json", lambda p: json.loads(p.read_text()))
    esc = _read(out / "escape.csv", pd.read_csv) if (out / "escape.csv").exists() else None
    extra = {p.stem.removeprefix("section_"): p.read_text() for p in sorted(out.glob("section_*.md"))}
    write_markdown(df, cfg, out, extra, esc)


def _read(path: Path, reader):
    """``reader(path)``; a missing or unreadable file is a ValueError naming it."""
    try:
        return reader(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
