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
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from tqdm import tqdm

from toybench import analysis, plots
from toybench.config import require
from toybench.methods import Method
from toybench.tabular.bandit import MultiAnswerBandit, SharedBandit
from toybench.tabular.envs import Scenario
from toybench.tabular.pipeline import PipelineConfig, run_method
from toybench.tabular.tree import ReasoningTree
from toybench.theorems import TheoremsConfig, run_theorems, theorems_markdown
from toybench.tiny.config import TinyConfig, quick_config

__all__ = ["ReportConfig", "run_report", "replot", "run_comparisons", "resolve", "SETTINGS"]

SETTINGS = ("bandit", "bandit_shared", "tree", "tree_offpolicy")


@dataclass
class ReportConfig:
    """The main job: theorems + the SFT-method comparison (CPU, minutes).

    The budgets and RL settings of the comparison, the theorem checks and the tiny-transformer
    scale are the nested configs ``pipeline``, ``theorems`` and ``tiny`` (``--pipeline.sft-steps``,
    ``--theorems.bandit-instances``, ``--tiny.rl-steps``, ...), each with its own defaults.
    """

    out: Path = Path("out/report")
    """Output directory (report.md, results.csv, config.json, figures)."""
    quick: bool = False
    """Smoke-test preset: few seeds, short budgets, small sweeps (about 15 s); also the quick theorems and
    tiny-transformer settings (other ``--tiny.*`` knobs are then ignored)."""
    seeds: int = 20
    """Independent random instances (environment + data) per setting; CIs are over these."""
    scale: Literal["toy", "transformer"] = "toy"
    """'transformer' adds the tiny-transformer section to the toy scales."""
    skip_theorems: bool = False
    """Do not run the theorems section."""
    seed: int = 0
    """Seed of the first instance (instance i uses seed + i); also sets ``pipeline.grpo_seed``,
    ``theorems.seed``, ``tiny.task_seed`` and ``tiny.pretrain_seed``."""
    settings: tuple[str, ...] = SETTINGS
    """Settings to run (subset of bandit, bandit_shared, tree, tree_offpolicy)."""
    methods: tuple[str, ...] = ("none", "sft", "curio", "dft")
    """Methods run in every setting besides the sweeps (names as in toybench.methods)."""
    entropy_coefs: tuple[float, ...] = (0.1, 0.3, 1.0)
    """Entropy-SFT coefficients (one method entropy_sft@c each)."""
    gift_betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    """GIFT inverse temperatures (one method gift@beta each); SFT is beta = inf."""
    pear_levels: tuple[str, ...] = ("token", "block", "sequence")
    """PEAR levels, run in the token-MDP settings (at T = 1 they reduce to SFT or a scalar weight)."""
    eval_samples: int = 64
    """Samples per prompt that the exact pass@k stands for; every k of pipeline.pass_k must be <= this."""
    headline_k: int = 4
    """The pass@k shown next to pass@1 in the comparisons (must be in pipeline.pass_k)."""
    reward_threshold: float = 0.9
    """Comparison (e): RL steps until the mean pass@1 reaches this."""
    wrong_demo_frac: float = 0.2
    """Imperfect teacher: fraction of prompts whose demonstrations are the teacher's mistake."""
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
    base_correct_mass: float = 0.1
    """Bandit: mass of pi_base on correct answers."""
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
    """Budgets and RL settings of every SFT -> RL run of the comparison."""
    theorems: TheoremsConfig = field(default_factory=TheoremsConfig)
    """The theorems section (its ``out`` is OUT/theorems, its ``quick`` follows ``--quick``)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """The tiny-transformer section (``--scale transformer``); ``tiny.seeds`` training seeds per method."""


# The --quick preset: integers shrink to at most these values, other fields are replaced.
QUICK = dict(
    seeds=4,
    entropy_coefs=(0.3,),
    gift_betas=(1.0, 4.0, 16.0),
    bandit_prompts=8,
    tree_prompts=4,
    tree_V=4,
)
QUICK_PIPELINE = dict(sft_steps=8, rl_steps=12)
QUICK_TINY_SEEDS = 2


def _shrink(cfg, preset: dict):
    return dataclasses.replace(
        cfg, **{k: min(getattr(cfg, k), v) if isinstance(v, int) else v for k, v in preset.items()}
    )


def resolve(cfg: ReportConfig) -> ReportConfig:
    """Apply the quick preset, forward the seed, and validate; a bad field raises ValueError naming it."""
    tiny = cfg.tiny
    if cfg.quick:
        cfg = dataclasses.replace(_shrink(cfg, QUICK), pipeline=_shrink(cfg.pipeline, QUICK_PIPELINE))
        tiny = quick_config(seeds=min(tiny.seeds, QUICK_TINY_SEEDS))
    cfg = dataclasses.replace(
        cfg,
        pipeline=dataclasses.replace(cfg.pipeline, grpo_seed=cfg.seed),
        theorems=dataclasses.replace(
            cfg.theorems, out=Path(cfg.out) / "theorems", quick=cfg.quick or cfg.theorems.quick, seed=cfg.seed
        ),
        tiny=dataclasses.replace(tiny, task_seed=cfg.seed, pretrain_seed=cfg.seed),
    )
    require(cfg, non_negative=("seed",), at_least={"seeds": 2})  # confidence intervals need two seeds
    require(cfg.tiny, at_least={"seeds": 2}, prefix="tiny.")
    if not 0 < cfg.reward_threshold <= 1:
        raise ValueError(f"reward_threshold must be in (0, 1], got {cfg.reward_threshold}")
    for s in cfg.settings:
        if s not in SETTINGS:
            raise ValueError(f"settings: unknown setting {s!r}; choose from {SETTINGS}")
    for m in all_methods(cfg, "tree"):
        try:
            Method.parse(m)
        except ValueError as err:
            raise ValueError(f"methods: {err}") from None
    if "sft" not in cfg.methods:
        raise ValueError("methods must include 'sft' (every comparison is against it)")
    cfg.pipeline.validate(prefix="pipeline.")
    pass_k = cfg.pipeline.pass_k
    if max(pass_k) > cfg.eval_samples:
        raise ValueError(
            f"pipeline.pass_k: k = {max(pass_k)} is larger than eval_samples = {cfg.eval_samples}"
        )
    if cfg.headline_k not in pass_k:
        raise ValueError(f"headline_k = {cfg.headline_k} must be one of pipeline.pass_k = {pass_k}")
    return cfg


def all_methods(cfg: ReportConfig, setting: str) -> list[str]:
    ms = list(cfg.methods) + [f"entropy_sft@{c:g}" for c in cfg.entropy_coefs]
    ms += [f"gift@{b:g}" for b in cfg.gift_betas]
    if setting.startswith("tree"):
        # Blocks of 2 tokens: at the tree's horizon of 4, PEAR's default block of 4 is the sequence level.
        ms += [f"pear_{lvl}" + (",block_size=2" if lvl == "block" else "") for lvl in cfg.pear_levels]
    return ms


def make_scenario(cfg: ReportConfig, setting: str, seeds: list[int]) -> Scenario:
    """Build one setting for the given seeds (knobs from the config)."""
    data = dict(
        wrong_demo_frac=cfg.wrong_demo_frac, demos_per_prompt=cfg.demos_per_prompt, error_unit=cfg.error_unit
    )
    if setting == "bandit":
        return MultiAnswerBandit(
            seeds, cfg.bandit_prompts, cfg.bandit_V, cfg.bandit_correct, cfg.base_correct_mass, **data
        )
    if setting == "bandit_shared":
        return SharedBandit(
            seeds, cfg.shared_prompts, cfg.shared_prompts // 2, cfg.shared_V, cfg.shared_d, **data
        )
    source = "behavior" if setting == "tree_offpolicy" else "expert"
    return ReasoningTree(seeds, cfg.tree_prompts, cfg.tree_V, cfg.tree_H, data_source=source, **data)


def run_comparisons(cfg: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method on every setting, vectorised over seeds.

    Returns the long results frame (results.csv) and the per-prompt RL escape times (escape.csv).
    """
    torch.manual_seed(cfg.seed)  # nothing below draws from the global generator; set for safety
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    jobs = [(s, m) for s in cfg.settings for m in all_methods(cfg, s)]
    frames, escapes, scenarios = [], [], {}
    for s, m in tqdm(jobs, desc="compare", unit="run"):
        if s not in scenarios:
            scenarios[s] = make_scenario(cfg, s, seeds)
        df = run_method(scenarios[s], m, cfg.pipeline, escape_threshold=cfg.reward_threshold)
        escapes.append(df.attrs.pop("escape").assign(setting=s))
        df.insert(0, "setting", s)
        frames.append(df)
    out, esc = pd.concat(frames, ignore_index=True), pd.concat(escapes, ignore_index=True)
    out["seed"] += cfg.seed
    esc["seed"] += cfg.seed
    return out, esc


# ----------------------------------------------------------------------------- markdown
def headline_table(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows: methods; columns: settings; cells: post-RL pass@1 and pass@k (mean ± 95% CI)."""
    rl = analysis.stage_end(df, "rl")
    s = analysis.summary(rl, ["J", f"pass@{k}"], ["setting", "method"])
    cells = {
        (r.setting, r.method): f"{r.J:.3f} ± {r.J_ci:.3f} / {r[f'pass@{k}']:.3f}" for _, r in s.iterrows()
    }
    settings = list(dict.fromkeys(s["setting"]))
    methods = list(dict.fromkeys(s["method"]))
    t = pd.DataFrame(
        [[cells.get((s_, m), "") for s_ in settings] for m in methods], index=methods, columns=settings
    )
    t.index.name = "method"
    return t


def comparisons(df: pd.DataFrame, cfg: dict, esc: pd.DataFrame | None = None) -> list[analysis.Comparison]:
    """All five comparisons over the settings present in ``df``."""
    settings = list(dict.fromkeys(df["setting"]))
    k = f"pass@{cfg['headline_k']}"
    out = [analysis.compare_ranking(df, s) for s in settings]
    out += [analysis.compare_entropy(df, s) for s in settings]
    out += [
        analysis.compare_gift(df, s, ("J", k)) for s in settings if (df[df.setting == s].kind == "gift").any()
    ]
    pear = [s for s in settings if df[df.setting == s].method.str.startswith("pear_").any()]
    pear = ["tree_offpolicy"] if "tree_offpolicy" in pear else pear
    out += [analysis.compare_pear(df, s, ("J", k)) for s in pear]
    if esc is None:
        esc = analysis.steps_to_threshold(df, cfg["reward_threshold"])
    out.append(analysis.compare_escape(esc, cfg["reward_threshold"]))
    return out


SECTIONS = {
    "a": ("(a) Does the ranking after SFT survive RL?", "fig_a_ranking.png"),
    "b": ("(b) Entropy-SFT vs CurioSFT: which entropy is useful?", "fig_b_entropy.png"),
    "c": ("(c) GIFT: post-RL performance against the temperature", "fig_c_gift.png"),
    "d": ("(d) PEAR vs SFT when the data come from pi_beta != pi_base", "fig_d_pear.png"),
    "e": ("(e) RL steps to a reward threshold vs the initial mass on correct answers", "fig_e_escape.png"),
}


def make_figures(df: pd.DataFrame, cfg: dict, out: Path, esc: pd.DataFrame | None = None) -> None:
    settings = list(dict.fromkeys(df["setting"]))
    k = f"pass@{cfg['headline_k']}"
    plots.plot_ranking(df, settings, out)
    plots.plot_entropy(df, settings, out)
    plots.plot_gift(df, settings, out, ("J", k))
    pear = [s for s in settings if df[df.setting == s].method.str.startswith("pear_").any()]
    if pear:
        plots.plot_pear(df, "tree_offpolicy" if "tree_offpolicy" in pear else pear[0], out, ("J", k))
    if esc is None:
        esc = analysis.steps_to_threshold(df, cfg["reward_threshold"])
    plots.plot_escape(esc, out, cfg["reward_threshold"])
    gifts = sorted((m for m in df["method"].unique() if m.startswith("gift@")), key=lambda m: float(m[5:]))
    ents = [m for m in df["method"].unique() if m.startswith("entropy_sft")]
    keep = ["none", "sft", "curio", "dft"] + gifts[len(gifts) // 2 : len(gifts) // 2 + 1] + ents[-1:]
    plots.plot_curves(df, settings, out, [m for m in keep if m in set(df["method"])])


def write_markdown(
    df: pd.DataFrame, cfg: dict, out: Path, extra: dict[str, str], esc: pd.DataFrame | None = None
) -> Path:
    """Assemble report.md from the results frame, the resolved config and optional sections."""
    comps = comparisons(df, cfg, esc)
    k = cfg["headline_k"]
    pipe = cfg.get("pipeline", cfg)  # runs written before the configs were nested hold it flat
    seeds, settings = df["seed"].nunique(), list(dict.fromkeys(df["setting"]))
    md = [
        "# How should SFT be done so that RL works best? (toybench report)",
        "",
        f"Exact tabular comparison of every SFT method as an initialiser for RL: {len(settings)} settings "
        f"({', '.join(settings)}), {df['method'].nunique()} methods, {seeds} seeds each, SFT "
        f"{pipe['sft_steps']} steps then RL ({pipe['rl_algorithm']}) {pipe['rl_steps']} steps. All metrics "
        "are exact expectations (enumeration over answers/sequences); intervals are 95% Student-t intervals "
        "over seeds, method differences are paired by seed (same instance and data). Raw records: "
        "`results.csv`; resolved config: `config.json`; re-plot with `toybench plot DIR`.",
        "",
        "## Verdicts",
        "",
    ]
    md += [f"- {c.title}: **{c.verdict}**" for c in comps]
    md += [
        "",
        f"## Headline: post-RL pass@1 (mean ± 95% CI) / pass@{k}",
        "",
        analysis.markdown_table(headline_table(df, k).reset_index()),
        "",
        "Settings: `bandit` = per-prompt softmax over answers, expert demonstrations on one correct answer; "
        "`bandit_shared` = log-linear policy over prompt features, SFT and RL on disjoint prompts; `tree` = "
        "reasoning-tree token MDP (strategy fork, near-deterministic execution, verified answer), expert on "
        "one strategy; `tree_offpolicy` = the same tree with data rejection-sampled from pi_beta != pi_base. "
        f"The teacher is wrong on a fraction {cfg['wrong_demo_frac']:g} of prompts "
        f"({cfg['error_unit']}-level mistakes), {cfg['demos_per_prompt']} demonstrations per prompt.",
        "",
    ]
    if extra.get("theorems"):
        text = extra["theorems"].strip()
        md += ([] if text.startswith("## ") else ["## Theorems", ""]) + [text, ""]
    for key, (title, fig) in SECTIONS.items():
        cs = [c for c in comps if c.key == key]
        if not cs:
            continue
        md += [f"## {title}", ""]
        for c in cs:
            md += [f"### {c.title}", "", analysis.markdown_table(c.table.reset_index()), "", c.paragraph, ""]
        if (out / fig).exists():
            md += [f"![{title}]({fig})", ""]
    if (out / "fig_curves.png").exists():
        md += ["## Training curves (pass@1, SFT then RL)", "", "![curves](fig_curves.png)", ""]
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
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    timing, extra = {}, {}
    resolved = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))  # paths as strings
    (out / "config.json").write_text(json.dumps(resolved, indent=2))
    if not cfg.skip_theorems:
        t0 = time.perf_counter()
        extra["theorems"] = _theorems_section(cfg)
        timing["theorems"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    df, esc = run_comparisons(cfg)
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
    df = pd.read_csv(out / "results.csv")
    cfg = json.loads((out / "config.json").read_text())
    esc = pd.read_csv(out / "escape.csv") if (out / "escape.csv").exists() else None
    extra = {p.stem.removeprefix("section_"): p.read_text() for p in sorted(out.glob("section_*.md"))}
    make_figures(df, cfg, out, esc)
    write_markdown(df, cfg, out, extra, esc)
