"""The report's configuration: ``ReportConfig``, the --quick preset, ``resolve`` (validation) and the
equal-K tuning grid of every method family."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from tyro.conf import Suppress

from toybench.config import Rule, at_least, check, deferred_validation, fill_quick
from toybench.methods import Method
from toybench.tabular.pipeline import PipelineConfig
from toybench.theorems import TheoremsConfig
from toybench.tiny.config import TinyConfig, quick_config

SETTINGS = ("bandit", "bandit_shared", "tree", "tree_offpolicy", "tree_shared")
#: the baselines of docs/methods.md §1.8-1.12, run with --methods (not in the default map)
BASELINE_FAMILIES = ("asft", "sft_kl", "prob", "psft", "prift", "chord_phi")
#: every family --methods accepts
FAMILIES = (
    *("none", "sft", "sft_early", "dft", "curio", "entropy_sft", "gift", "gift_seq", "pear"),
    *BASELINE_FAMILIES,
)
#: the default map: the reference families (none, SFT, early-stopped SFT) and the methods of the claims
DEFAULT_METHODS = ("none", "sft", "sft_early", "curio", "gift", "pear")
#: families without a knob: their K configurations are K SFT learning rates (``lr_grid``)
PLAIN_FAMILIES = ("sft", "sft_early", "dft", "chord_phi")
#: PEAR's clip knob: the paper's clips, or none at all
PEAR_CLIPS = {"paper": "", "none": ",token_clip=-1e9:1e9,total_clip=-1e9:1e9"}
#: the map's RL stages: label -> PipelineConfig fields (GRPO's group size is the num_generations axis)
RL_ALGORITHMS = {
    "grpo": dict(rl_algorithm="grpo", loss_type="grpo", adv_scale="group"),
    "dr_grpo": dict(rl_algorithm="grpo", loss_type="dr_grpo", adv_scale="none"),
    "exact_pg": dict(rl_algorithm="exact_pg"),
}
#: families that need a token MDP (run in the tree settings only)
TOKEN_FAMILIES = ("gift_seq", "pear")


@dataclass
class ReportConfig:
    """The main job: theorems + the map of SFT methods as RL initialisers (CPU, minutes).

    The map sweeps the RL stage (sampled GRPO at each group size G, and exact PG as the infinite-sample
    contrast), the teacher's error rate, the base's mass on correct answers and the RL budget. SFT
    strength and the RL step size are separate knobs: every SFT family gets the same number K of SFT
    configurations (``lr_grid`` SFT learning rates, or ``knob_lrs`` x its knob), each crossed with the one
    RL step-size grid ``rl_lrs`` that every family shares (``none``, with no SFT, gets ``rl_lrs`` alone).
    One configuration is selected per cell on the validation seeds (step sizes whose result moves by more
    than ``stability_tol`` under a float-level perturbation are rejected first; the RL grid is extended
    past its end wherever a selection sits on its edge, ``rl_lr_extensions``), and every reported number
    comes from the disjoint test seeds. ``sft_early`` (SFT stopped after ``sft_early_steps``) is the
    baseline a soft SFT method must beat. Settings with shared parameters (``bandit_shared``,
    ``tree_shared``) report every metric on held-out prompts that neither SFT nor RL sees. The SFT budget
    and RL settings are ``pipeline`` (``--pipeline.sft-steps``, ...; its ``rl_steps``, ``sft_lr``,
    ``rl_lr``, ``rl_algorithm`` and ``num_generations`` are set by the map's axes and grid).
    """

    out: Path = Path("out/report")
    """Output directory (report.md, headline.md, results.csv, config.json, figures)."""
    quick: bool = False
    """Smoke-test preset: a small grid, few seeds, short budgets; also the quick theorems and
    tiny-transformer settings. It fills only the flags you do not type: a flag you type wins, even at
    its default value."""
    seeds: int = 10
    """Test seeds per cell (every reported number and CI is over these)."""
    val_seeds: int = 4
    """Validation seeds per cell (configurations are selected on these only; disjoint from the test seeds)."""
    scale: Literal["toy", "transformer"] = "toy"
    """'transformer' adds the tiny-transformer section to the toy scales."""
    workers: int = 0
    """Processes the map's jobs run on (0: one per CPU this process may use). Every job's result depends
    on the job alone, so the results are the same for any number of workers."""
    skip_theorems: bool = False
    """Do not run the theorems section."""
    seed: int = 0
    """First seed: validation seeds are seed .. seed+val_seeds-1, test seeds the next ``seeds``; also sets
    ``pipeline.grpo_seed``, ``theorems.seed``, ``tiny.task_seed`` and ``tiny.pretrain_seed``."""
    settings: tuple[str, ...] = SETTINGS
    """Settings to run (subset of bandit, bandit_shared, tree, tree_offpolicy, tree_shared)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Method families to run (none, sft, sft_early, dft, curio, entropy_sft, gift, gift_seq, pear; gift_seq
    and pear only in the trees; also the baselines asft, sft_kl, prob, psft, prift, chord_phi of
    docs/methods.md §1.8-1.12)."""
    wrong_demo_fracs: tuple[float, ...] = (0.0, 0.2, 0.4)
    """Map axis: fraction of prompts whose demonstrations are the teacher's mistake."""
    base_correct_masses: tuple[float, ...] = (1e-4, 0.01)
    """Map axis: pi_base's mass on correct answers (every setting's builder takes it)."""
    rl_budgets: tuple[int, ...] = (20, 60)
    """Map axis: RL steps (each budget is a prefix of the longest run, so budgets cost nothing extra).
    results.csv also records the budget in samples (``samples`` = G x steps x RL prompts)."""
    rl_algorithms: tuple[str, ...] = ("grpo", "exact_pg")
    """Map axis: the RL stage. 'grpo' samples G completions per prompt with std-normalised group
    advantages (TRL's loss_type 'grpo'); 'dr_grpo' is Dr. GRPO (advantages not divided by the group std,
    loss_type 'dr_grpo'); both give each seed its own rollout stream, the same for every method (common
    random numbers). 'exact_pg' is the infinite-sample contrast (exact expected gradient, recorded with
    num_generations = 0)."""
    num_generations: tuple[int, ...] = (4, 16)
    """Map axis: GRPO's group size G (samples per prompt per step), one map per value."""
    lr_grid: tuple[float, ...] = (0.5, 2.0)
    """SFT learning rates of the families without a knob: sft, sft_early, dft, chord_phi (K = its length)."""
    knob_lrs: tuple[float, ...] = (1.0,)
    """SFT learning rates crossed with each knob (len(knob_lrs) x len(knob values) must equal K)."""
    rl_lrs: tuple[float, ...] = (16.0, 64.0, 256.0)
    """The RL step-size grid, shared by every family (``none`` included), crossed with each SFT
    configuration; extended where selection sits on its edge (``rl_lr_extensions``)."""
    rl_lr_extensions: int = 3
    """Rounds of the RL grid's extension: after each, in every map (setting x RL stage) and family whose
    selected step size sits on the grid's high (low) end in some cell and beats its neighbour by more
    than ``selection_tie`` (on validation seeds), the next value beyond the end (x or / the grid's end
    ratio) is run for every SFT configuration of the family. 0: the grid as given. Needs 3+ values."""
    selection_tie: float = 0.002
    """Validation means within this of a family's best are tied, and the lowest configuration id among
    them wins (the smallest SFT learning rate, then the smallest RL step size): a tenth of the default
    ``min_effect``, so that differences far below any effect the report calls real cannot decide a
    selection or push it onto the grid's edge."""
    sft_early_steps: int = 10
    """SFT steps of ``sft_early`` (early-stopped SFT: plain SFT with a smaller budget)."""
    stability_tol: float = 0.02
    """Selection rejects a configuration whose mean validation pass@1 moves by more than this when its
    step sizes are multiplied by 1 + 1e-6 (a float-level perturbation, run on the validation seeds)."""
    gift_betas: tuple[float, ...] = (2.0, 8.0)
    """GIFT's knob: inverse temperature (SFT is beta = inf)."""
    entropy_coefs: tuple[float, ...] = (0.1, 0.3)
    """Entropy-SFT's knob: the entropy coefficient."""
    curio_alphas: tuple[float, ...] = (0.5, 1.0)
    """CurioSFT's knob: alpha."""
    asft_lams: tuple[float, ...] = (0.1, 1.0)
    """ASFT's and SFT+KL's knob: the weight lam of KL(pi_base || pi)."""
    prob_alphas: tuple[float, ...] = (0.5, 2.0)
    """The probability family's knob: alpha (0 is SFT; 1 has DFT's gradient, so it is not on the grid)."""
    psft_epsilons: tuple[float, ...] = (0.1, 0.28)
    """PSFT's knob: the clip epsilon (its snapshot is refreshed every 8 SFT steps)."""
    prift_weights: tuple[str, ...] = ("prob", "mass")
    """PriFT's knob: the weight (the base's probability of the token, or its cumulative-mass mask)."""
    pear_levels: tuple[str, ...] = ("token",)
    """PEAR's knob: the level (token, block: blocks of 2 tokens, since at the tree's horizon of 4 the
    default block of 4 is the sequence level; sequence); run in the token-MDP settings only."""
    pear_clips: tuple[str, ...] = ("paper", "none")
    """PEAR's knob, crossed with the level: its clips ('paper': token -0.08:0.3, total -10:5) or none."""
    eval_samples: int = 64
    """Samples per prompt that the exact pass@k stands for; every k of pipeline.pass_k must be <= this."""
    headline_k: int = 16
    """The pass@k of claim (d) and of the headline, beside pass@1 and pass@64 (must be in pipeline.pass_k)."""
    min_effect: float = 0.02
    """Minimum effect (post-RL pass@1, or pass@k for claim (d)) a claim must show: a reproduction needs an
    effect significantly above it, a refutation one significantly beyond it the other way, and an
    equivalence test (TOST) against it says no effect that matters exists."""
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
    shared_tree_prompts: int = 16
    """Shared-feature tree: SFT + RL prompts (SFT on the first half, RL on the rest; 8 held-out prompts)."""
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(num_iterations=1))
    """SFT budget and RL settings of every SFT -> RL run (rl_steps, sft_lr, rl_lr, rl_algorithm and
    num_generations: see above); GRPO runs one update per sampled batch (TRL's default num_iterations)."""
    theorems: TheoremsConfig = field(default_factory=TheoremsConfig)
    """The theorems section (its ``out`` is OUT/theorems, its ``quick`` follows ``--quick``)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """The tiny-transformer section (``--scale transformer``); ``tiny.seeds`` training seeds per method."""
    quick_filled: Annotated[tuple[str, ...], Suppress] = ()
    """Set by :func:`resolve`: the fields ``quick`` filled (not a flag)."""


QUICK_TINY = quick_config()
#: The --quick preset: it fills only the fields whose flags the user did not type (nested configs by name).
QUICK = dict(
    seeds=4,
    val_seeds=3,
    rl_budgets=(6, 16),
    rl_lrs=(2.0, 8.0),
    sft_early_steps=2,
    bandit_prompts=8,
    tree_prompts=4,
    tree_V=4,
    pipeline=dict(sft_steps=8),
    tiny={f.name: getattr(QUICK_TINY, f.name) for f in dataclasses.fields(QUICK_TINY)},
)


def resolve(cfg: ReportConfig, given: set[str] | None = None) -> ReportConfig:
    """Apply the quick preset, forward the seed, and validate the whole config before anything runs.

    ``given``: the dotted names of the flags the user typed (:func:`toybench.config.given_flags`);
    ``quick`` never overrides those (None, the Python API: fields still at their defaults are filled).
    Idempotent: ``quick`` is applied once (``quick_filled`` records it). A bad field raises ValueError
    naming it (nested ones as ``pipeline.x``, ``theorems.x``, ``tiny.x``); the CLI turns the name into the
    flag (``--pipeline.x``).
    """
    with deferred_validation():  # TinyConfig is validated below, with its prefix, not on each replace
        return _resolve(cfg, given)


def _resolve(cfg: ReportConfig, given: set[str] | None) -> ReportConfig:
    if cfg.quick and not cfg.quick_filled:
        cfg, filled = fill_quick(cfg, QUICK, given)
        cfg = dataclasses.replace(cfg, quick_filled=tuple(filled) or ("(nothing)",))
    _validate_fields(cfg)
    theorems = dataclasses.replace(
        cfg.theorems, out=Path(cfg.out) / "theorems", quick=cfg.quick or cfg.theorems.quick, seed=cfg.seed
    )
    try:
        given_theorems = None if given is None else {g[9:] for g in given if g.startswith("theorems.")}
        theorems = theorems.resolved(given_theorems)
    except ValueError as err:
        raise ValueError(f"theorems.{err}") from None
    cfg = dataclasses.replace(
        cfg,
        rl_budgets=tuple(sorted(set(cfg.rl_budgets))),
        pipeline=dataclasses.replace(cfg.pipeline, grpo_seed=cfg.seed, rl_steps=max(cfg.rl_budgets)),
        theorems=theorems,
        tiny=dataclasses.replace(cfg.tiny, task_seed=cfg.seed, pretrain_seed=cfg.seed),
    )
    cfg.tiny.validate(prefix="tiny.")
    check(cfg.tiny, {"seeds": at_least(2)}, prefix="tiny.")
    _validate_grid(cfg)
    cfg.pipeline.validate(prefix="pipeline.")
    pass_k = cfg.pipeline.pass_k
    if max(pass_k) > cfg.eval_samples:
        raise ValueError(
            f"pipeline.pass_k: k = {max(pass_k)} is larger than eval_samples = {cfg.eval_samples}"
        )
    if cfg.headline_k not in pass_k:
        raise ValueError(f"headline_k = {cfg.headline_k} must be one of pipeline.pass_k = {pass_k}")
    return cfg


def _grid(lo: float, hi: float = float("inf"), closed: bool = False) -> Rule:
    """A non-empty tuple of values in (lo, hi] (``closed``: [lo, hi])."""
    rule = f"{'>=' if closed else '>'} {lo:g}" if hi == float("inf") else f"in [{lo:g}, {hi:g}]"
    return Rule(
        lambda g: bool(g) and all((lo <= x if closed else lo < x) and x <= hi for x in g),
        f"non-empty values {rule}",
    )


#: The report's own fields (the nested configs have their own rules). Confidence intervals need two
#: test seeds; selection needs one validation seed.
RULES: dict[str, Rule] = {
    "seed": at_least(0),
    "workers": at_least(0),
    **{n: at_least(1) for n in ("val_seeds", "eval_samples", "headline_k", "demos_per_prompt")},
    **{n: at_least(2) for n in ("seeds", "bandit_V", "shared_prompts", "shared_V", "shared_tree_prompts")},
    **{n: at_least(1) for n in ("bandit_prompts", "bandit_correct", "shared_d", "tree_prompts")},
    "tree_V": at_least(2),
    "tree_H": at_least(3),
    "reward_threshold": Rule(lambda v: 0 < v <= 1, "in (0, 1]"),
    "rl_budgets": Rule(lambda b: bool(b) and min(b) >= 1, "positive RL step counts"),
    "wrong_demo_fracs": _grid(0.0, 1.0, closed=True),
    "base_correct_masses": _grid(1e-6, 1 - 1e-6, closed=True),
    "lr_grid": _grid(0.0),
    "knob_lrs": _grid(0.0),
    "rl_lrs": _grid(0.0),
    "min_effect": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "stability_tol": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "selection_tie": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "rl_lr_extensions": at_least(0),
    "rl_algorithms": Rule(
        lambda g: bool(g) and set(g) <= set(RL_ALGORITHMS), f"non-empty values of {tuple(RL_ALGORITHMS)}"
    ),
    "num_generations": Rule(lambda g: bool(g) and min(g) >= 2, "non-empty GRPO group sizes >= 2"),
    "pear_clips": Rule(
        lambda g: bool(g) and set(g) <= set(PEAR_CLIPS), f"non-empty values of {tuple(PEAR_CLIPS)}"
    ),
    "gift_betas": _grid(0.0),
    "entropy_coefs": _grid(0.0, closed=True),
    "curio_alphas": _grid(0.0, closed=True),
    "asft_lams": _grid(0.0, closed=True),
    "prob_alphas": _grid(0.0, closed=True),
    "psft_epsilons": _grid(0.0, closed=True),
}


def _validate_fields(cfg: ReportConfig) -> None:
    """The report's own scalar fields and lists (before the seed is forwarded): :data:`RULES`, then the
    checks across fields and the names of settings, families and PEAR levels."""
    check(cfg, RULES)
    if not cfg.bandit_correct < cfg.bandit_V:
        raise ValueError(f"bandit_correct must be < bandit_V = {cfg.bandit_V}, got {cfg.bandit_correct}")
    if cfg.tree_V**cfg.tree_H > 2_000_000:
        raise ValueError(f"tree_H: tree_V**tree_H = {cfg.tree_V**cfg.tree_H} leaves is too many to enumerate")
    for name, known, what in (
        ("settings", SETTINGS, "setting"),
        ("methods", FAMILIES, "method family"),
        ("pear_levels", ("token", "block", "sequence"), "level"),
        ("prift_weights", ("prob", "mass"), "weight"),
    ):
        for v in getattr(cfg, name):
            if v not in known:
                raise ValueError(f"{name}: unknown {what} {v!r}; choose from {', '.join(known)}")
    if not {"sft", "none"} <= set(cfg.methods):
        raise ValueError("methods must include 'sft' and 'none' (every claim is tested against both)")


def _validate_grid(cfg: ReportConfig) -> None:
    """Every SFT family gets K SFT configurations (x the RL grid) and every one of them parses."""
    if "sft_early" in cfg.methods and not 1 <= cfg.sft_early_steps < cfg.pipeline.sft_steps:
        raise ValueError(
            f"sft_early_steps must be in [1, pipeline.sft_steps = {cfg.pipeline.sft_steps}), "
            f"got {cfg.sft_early_steps}"
        )
    R = len(cfg.rl_lrs)
    for s in cfg.settings:
        try:
            grid = tuning_grid(cfg, s)
        except ValueError as err:
            raise ValueError(f"methods: {err}") from None
        for fam, configs in grid.items():
            if len(configs) != (len(cfg.lr_grid) if fam != "none" else 1) * R:
                raise ValueError(
                    f"knob_lrs: {fam} gets {len(configs) // R} SFT configurations, not K = len(lr_grid) = "
                    f"{len(cfg.lr_grid)} (len(knob_lrs) x the number of knob values must equal K)"
                )


def tuning_grid(cfg: ReportConfig, setting: str) -> dict[str, list[tuple[Method, float, float]]]:
    """family -> its configurations (the parsed method, SFT lr, RL lr): K SFT configurations x ``rl_lrs``.

    ``sft``, ``sft_early``, ``dft`` and ``chord_phi`` (no knob) get the K SFT learning rates of
    ``lr_grid``; the others cross ``knob_lrs`` with their knob; ``none`` (no SFT: its SFT lr is NaN) gets
    the RL grid alone. Every family crosses its SFT configurations with the same RL step sizes ``rl_lrs``.
    Families that need a token MDP (gift_seq, pear) are skipped in the bandits.
    """
    knobs = {
        "gift": [f"gift@{b:g}" for b in cfg.gift_betas],
        "gift_seq": [f"gift_seq@{b:g}" for b in cfg.gift_betas],
        "entropy_sft": [f"entropy_sft@{c:g}" for c in cfg.entropy_coefs],
        "curio": [f"curio,alpha={a:g}" for a in cfg.curio_alphas],
        "pear": [
            f"pear_{lvl}" + (",block_size=2" if lvl == "block" else "") + PEAR_CLIPS[c]
            for lvl in cfg.pear_levels
            for c in cfg.pear_clips
        ],
        "asft": [f"asft@{x:g}" for x in cfg.asft_lams],
        "sft_kl": [f"sft_kl@{x:g}" for x in cfg.asft_lams],
        "prob": [f"prob@{x:g}" for x in cfg.prob_alphas],
        "psft": [f"psft@{x:g}" for x in cfg.psft_epsilons],
        "prift": [f"prift@{w}" for w in cfg.prift_weights],
    }
    out = {}
    for fam in cfg.methods:
        if fam in TOKEN_FAMILIES and not setting.startswith("tree"):
            continue
        if fam == "none":
            sft = [("none", float("nan"))]
        elif fam in PLAIN_FAMILIES:
            sft = [("sft" if fam == "sft_early" else fam, lr) for lr in cfg.lr_grid]
        else:
            sft = [(spec, lr) for spec in knobs[fam] for lr in cfg.knob_lrs]
        out[fam] = [
            (m, lr, rl) for m, lr in ((Method.parse(spec), lr) for spec, lr in sft) for rl in cfg.rl_lrs
        ]
    return out


def rl_variants(cfg: ReportConfig) -> list[tuple[str, int]]:
    """(RL algorithm label, G) of every map of the RL axis: each sampled algorithm at every G of
    ``num_generations``, exact PG once with G = 0 (no samples)."""
    return [(a, g) for a in cfg.rl_algorithms for g in (cfg.num_generations if a != "exact_pg" else (0,))]
