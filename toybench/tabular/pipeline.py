"""base -> SFT(method) -> RL(exact PG or GRPO) -> eval, vectorised over seeds and prompts.

Design choices
--------------
* One run = one method on one ``Scenario`` for all its seeds at once. Parameters carry the seed
  axis first; the loss is the SUM over seeds of each seed's loss, so one autograd call gives
  every seed its own gradient and plain SGD keeps the seeds independent (tested against a
  per-seed loop). Every seed has the same number of rows and tokens, so each seed's reduction
  is a fixed fraction of the batch reduction (``toybench.objectives.normalise`` with the seeds as
  groups).
* Exact where the setting allows it: SFT uses the finite demonstration set (all of it, every
  step), as a count-weighted sum over its distinct (seed, prompt, demonstration) rows
  (``_DemoRows``: the same loss and gradient, up to float rounding, with fewer rows); exact PG
  is the theorem dynamics' objective (``dynamics.leaf_pg_surrogate``): it enumerates all leaves
  and weights each row by sg[pi(leaf)], so its gradient is exactly -grad J; the exact KL term
  (``dynamics.leaf_kl``) weights the k1 estimator by pi(leaf) WITH gradient, which makes its
  gradient exactly grad KL(pi || ref). GRPO samples G leaves per prompt from each seed's own
  rollout stream (``rollouts.RolloutStreams``: independent of the batch) and uses
  ``group_advantages`` + ``toybench.objectives.grpo_per_token`` (clipped surrogate, k3 KL)
  normalised by ``toybench.objectives.normalise`` with the seeds as independent groups.
* Per-prompt (tabular) parameters get each prompt's own mean gradient; shared (log-linear)
  parameters get the mean over prompts.
* Metrics are exact (enumeration) at every step on the RL prompts: SFT loss on held-out
  data, J = pass@1, pass@k = 1 - (1 - J)^k, entropy, coverage, mass on reward-0 and on
  implausible answers, KL to base. Where the scenario has held-out eval prompts (shared
  parameters: ``SharedBandit``, ``SharedTree``) the same metrics on them are the ``eval_*`` columns; settings
  with per-prompt parameters cannot measure generalisation and have no such columns. Every loss
  comes from ``toybench.losses`` via ``toybench.objectives`` and ``toybench.methods``.
* ``gift_seq@beta``: the exact per-position conditionals of the sequence-level Gibbs target
  q(y) ∝ pi_base(y) exp(beta 1[y = demo]) are enumerated on the prefix tree once per run
  (``sequence_target``, ``TreeGeometry.gibbs_logp``) and the SFT loss is the cross-entropy to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from toybench import losses, metrics
from toybench.advantages import group_advantages
from toybench.config import require
from toybench.methods import Method
from toybench.objectives import (
    Counts,
    SFTInputs,
    grpo_per_token,
    loss_type_reduction,
    normalise,
    sft_per_token,
)
from toybench.tabular.dynamics import leaf_kl, leaf_pg_surrogate
from toybench.tabular.envs import Scenario
from toybench.tabular.policies import Policy, TabularPolicy, make_policy, sequence_logp
from toybench.tabular.policies import take_prompts as _on
from toybench.tabular.rollouts import RolloutStreams

__all__ = [
    "PipelineConfig",
    "run_method",
    "evaluate",
    "exact_pg_loss",
    "escape_frame",
    "sequence_target",
    "METRICS",
]

METRIC_BASE = (
    "sft_loss",
    "J",
    "entropy",
    "entropy_fork",
    "coverage",
    "wrong_mass",
    "implausible_mass",
    "kl_base",
)


@dataclass
class PipelineConfig:
    """Budgets and RL settings of one SFT -> RL run (shared by every method)."""

    sft_steps: int = 40
    """SFT gradient steps (full demonstration set each step)."""
    rl_steps: int = 60
    """RL gradient steps."""
    sft_lr: float = 1.0
    """SGD step size of SFT."""
    rl_lr: float = 1.0
    """SGD step size of RL."""
    rl_algorithm: str = "exact_pg"
    """'exact_pg' (enumeration, no sampling) or 'grpo' (G samples per prompt)."""
    num_generations: int = 8
    """GRPO group size G (TRL's name)."""
    num_iterations: int = 2
    """GRPO updates per sampled batch (TRL's name; clipping acts from the second one)."""
    epsilon: float = 0.2
    """Clip range below 1 of the GRPO ratio (TRL's name)."""
    epsilon_high: float = 0.28
    """Clip range above 1 of the GRPO ratio (TRL's name; DAPO clip-higher)."""
    adv_scale: str = "group"
    """Advantage scale for GRPO: group | batch (the std of one seed's P_rl x G rewards) | none."""
    loss_type: str = "grpo"
    """GRPO loss normaliser (TRL's names): grpo (per-sequence mean, then mean) | bnpo | dapo (token
    mean) | dr_grpo (sum / (sequences x horizon)) | sum."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the RL start (exact KL for exact PG, k3 for GRPO). TRL calls it
    ``beta``; here ``beta`` is GIFT's inverse temperature."""
    pass_k: tuple[int, ...] = (1, 4, 16, 64)
    """k values of the exact pass@k."""
    coverage_threshold: float = 0.05
    """A correct answer counts as covered when its probability exceeds this."""
    grpo_seed: int = 0
    """Seed of the GRPO sampler."""

    def validate(self, prefix: str = "") -> None:
        """Raise ValueError naming the first bad field (``prefix`` names the config it is nested in)."""
        require(
            self,
            non_negative=("sft_steps", "rl_steps", "kl_coef"),
            positive=("sft_lr", "rl_lr"),
            at_least={"num_generations": 2, "num_iterations": 1},
            one_of={"rl_algorithm": ("exact_pg", "grpo")},
            prefix=prefix,
        )
        try:
            loss_type_reduction(self.loss_type)
        except ValueError as e:
            raise ValueError(f"{prefix}{e}") from None
        if not self.pass_k or not min(self.pass_k) >= 1:
            raise ValueError(f"{prefix}pass_k must be non-empty positive ints, got {self.pass_k}")
        if not 0 <= self.coverage_threshold < 1:
            raise ValueError(f"{prefix}coverage_threshold must be in [0, 1), got {self.coverage_threshold}")


def metric_names(cfg: PipelineConfig) -> list[str]:
    return list(METRIC_BASE) + [f"pass@{k}" for k in cfg.pass_k]


METRICS = metric_names(PipelineConfig())


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def eval_constants(sc: Scenario, split: str = "rl") -> dict[str, torch.Tensor]:
    """Per-scenario tensors that ``evaluate`` needs at every step, computed once.

    ``split``: ``"rl"`` (the RL training prompts, held-out data ``sc.heldout``) or ``"eval"`` (the
    held-out prompts ``sc.eval_prompts`` with ``sc.eval_heldout``; shared-parameter settings only).
    """
    g = sc.geometry
    if split == "rl":
        prompts, heldout = sc.rl_prompts, sc.heldout
    elif split == "eval":
        if sc.eval_prompts is None:
            raise ValueError(
                f"scenario {sc.name!r} has no held-out eval prompts: with per-prompt parameters "
                "it cannot measure generalisation"
            )
        prompts, heldout = sc.eval_prompts, sc.eval_heldout
    else:
        raise ValueError(f"split must be 'rl' or 'eval', got {split!r}")
    base = g.leaf_logp(sc.base_logits[:, prompts])  # (S, P', L)
    r = sc.reward[:, prompts]
    return dict(
        prompts=prompts,
        base=base,
        reward=r,
        correct=r > 0,
        wrong=(r == 0).to(base.dtype),
        implausible=((base < -np.log(g.num_leaves)) & (r == 0)).to(base.dtype),  # less likely than uniform
        heldout=heldout,
    )


def evaluate(
    sc: Scenario,
    node_logits: torch.Tensor,
    cfg: PipelineConfig,
    const: dict[str, torch.Tensor] | None = None,
    per_prompt: bool = False,
    logp: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Exact metrics on the RL prompts, each averaged over prompts: name -> [S] ([S, P_rl] if per_prompt).

    node_logits: [S, P, N, V] (all prompts). Entropy is per token along trajectories
    (sequence entropy / H); ``entropy_fork`` is the entropy of the first token. ``const``:
    ``eval_constants(sc)``, cached by callers that evaluate every step; ``eval_constants(sc,
    "eval")`` evaluates on the held-out eval prompts instead. ``logp``: the leaf log-probs on the
    const's prompts [S, P', L] when the caller already has them.
    """
    g, c = sc.geometry, const or eval_constants(sc)
    z = _on(node_logits, c["prompts"])  # (S, P', N, V)
    logp = g.leaf_logp(z) if logp is None else logp  # (S, P_rl, L)
    p = logp.exp()
    J = (p * c["reward"]).sum(-1)  # (S, P_rl)
    out = {
        "sft_loss": -(c["heldout"] * logp).sum(-1) / g.H,
        "J": J,
        "entropy": metrics.entropy(logp) / g.H,  # sequence entropy over leaves, per token
        "entropy_fork": metrics.entropy(z[:, :, 0]),
        "coverage": metrics.coverage(p, c["correct"], cfg.coverage_threshold).to(p.dtype),
        "wrong_mass": (p * c["wrong"]).sum(-1),
        "implausible_mass": (p * c["implausible"]).sum(-1),
        "kl_base": metrics.kl_divergence(logp, c["base"]),  # sequence-level KL(pi || pi_base)
    }
    for k in cfg.pass_k:
        out[f"pass@{k}"] = metrics.pass_at_k_exact(J, k)
    return out if per_prompt else {k: v.mean(1) for k, v in out.items()}


# ----------------------------------------------------------------------------- stages
@torch.no_grad()
def sequence_target(sc: Scenario, beta: float) -> torch.Tensor:
    """log q(. | y_<t) at every demo's prefixes, q(y) ∝ pi_base(y) exp(beta 1[y = demo]): [B, H, V].

    One exact Gibbs backward pass over the whole tree per demonstration (rows in the order of
    ``sequence_logits(.., sc.demo_leaves, ..)``), from the scenario's pi_base.
    """
    g = sc.geometry
    base = sc.base_logits[:, sc.sft_prompts]  # (S, P_sft, N, V)
    R = torch.nn.functional.one_hot(sc.demo_leaves, g.num_leaves).to(base.dtype)  # (S, P_sft, n, L)
    logq = g.gibbs_logp(base[:, :, None], R, beta)  # (S, P_sft, n, N, V)
    nodes = g.path_nodes[sc.demo_leaves]  # (S, P_sft, n, H)
    out = torch.gather(logq, 3, nodes[..., None].expand(*nodes.shape, g.V))  # (S, P_sft, n, H, V)
    return out.reshape(-1, g.H, g.V)


@dataclass
class _DemoRows:
    """The distinct (seed, SFT prompt, demonstration) rows of the SFT batch, each with its count.

    Every method's per-token loss on a demonstration depends only on (seed, prompt, leaf), so the
    SFT loss (sum over a prompt's n demos / n) is the count-weighted sum over the DISTINCT rows:
    the same objective and gradient with fewer rows (with expert data every demo of a prompt is
    the same leaf, n times fewer). ``collapse=False`` keeps every row (count 1), for a loss that
    couples rows of the batch (``entropy_sft`` with ``rho < 1`` takes an entropy quantile over it).
    """

    seed: torch.Tensor  # (U,) seed index
    prompt: torch.Tensor  # (U,) prompt index into the policy's prompts (an element of sft_prompts)
    nodes: torch.Tensor  # (U, H) internal nodes along the demo's path
    targets: torch.Tensor  # (U, H) the demo's tokens
    rows: torch.Tensor  # (U,) a row of ``sequence_logits(.., sc.demo_leaves, ..)`` with this demo
    weight: torch.Tensor  # (U,) how many rows of that batch hold this demo

    @classmethod
    def of(cls, sc: Scenario, collapse: bool = True) -> _DemoRows:
        g = sc.geometry
        S, P_sft, n = sc.demo_leaves.shape
        sp = torch.arange(S * P_sft).repeat_interleave(n)  # (B,) flat (seed, prompt) of every row
        key = sp * g.num_leaves + sc.demo_leaves.reshape(-1) if collapse else torch.arange(S * P_sft * n)
        uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        rows = torch.full((len(uniq),), len(key)).scatter_reduce_(0, inverse, torch.arange(len(key)), "amin")
        leaves = sc.demo_leaves.reshape(-1)[rows]
        return cls(
            seed=sp[rows] // P_sft,
            prompt=sc.sft_prompts[sp[rows] % P_sft],
            nodes=g.path_nodes[leaves],
            targets=g.path_tokens[leaves],
            rows=rows,
            weight=counts.to(sc.base_logits.dtype),
        )

    def logits(self, node_logits: torch.Tensor) -> torch.Tensor:
        """The node logits [S, P, N, V] along every row's path: [U, H, V] (``sequence_logits``' rows)."""
        return node_logits[self.seed[:, None], self.prompt[:, None], self.nodes]

    def policy_logits(self, policy: Policy, params: torch.Tensor) -> torch.Tensor:
        """``self.logits(policy.node_logits(params))``, computed on the rows' paths only."""
        return policy.path_logits(params, self.seed, self.prompt, self.nodes)


def _sft_loss(sc, policy, params, teacher, method: Method, base_seq, seq_target=None, demo=None):
    """Sum over tokens, mean over a prompt's demos (shared parameters also average over prompts).

    ``demo``: the batch's ``_DemoRows`` (None: every row); ``base_seq`` / ``seq_target`` are on its
    rows, in its order."""
    n, P_sft = sc.demo_leaves.shape[2], len(sc.sft_prompts)
    demo = demo or _DemoRows.of(sc, not method.couples_rows)
    logits = demo.policy_logits(policy, params)  # (U, H, V)
    teacher_logits = demo.policy_logits(policy, teacher) if method.needs_teacher else None
    inputs = dict(
        logits=logits,
        targets=demo.targets,
        mask=torch.ones_like(demo.targets, dtype=logits.dtype),
        base_logits=base_seq,
        teacher_logits=teacher_logits,
        behavior_logp=sc.demo_behavior_logp.reshape(-1, sc.geometry.H)[demo.rows],
        sequence_target=seq_target,
    )
    if not method.couples_rows:
        per_token = sft_per_token(method, SFTInputs(**inputs))  # (U, H)
    else:  # the loss couples rows (an entropy quantile): take it per seed, as that seed's own run would
        per_token = torch.zeros_like(demo.targets, dtype=logits.dtype)
        for rows in (demo.seed == s for s in range(sc.num_seeds)):
            sub = {k: None if v is None else v[rows] for k, v in inputs.items()}
            per_token[rows] = sft_per_token(method, SFTInputs(**sub))
    weighted = per_token * demo.weight[:, None]
    loss = losses.reduce(weighted, torch.ones_like(weighted), "constant", constant=n)
    return loss if isinstance(policy, TabularPolicy) else loss / P_sft


def exact_pg_loss(sc, policy, params, ref_logp, cfg, logp=None):
    """-sum_x J(x) (+ kl_coef KL(pi || ref)) with exact gradients, by enumeration over leaves.

    The objective is the theorem dynamics' own (``dynamics.leaf_pg_surrogate`` / ``dynamics.leaf_kl``)
    applied to the RL prompts; shared (log-linear) parameters average it over prompts.
    """
    g, rl = sc.geometry, sc.rl_prompts
    if logp is None:
        logp = g.leaf_logp(policy.prompt_logits(params, rl))  # (S, P_rl, L)
    loss = leaf_pg_surrogate(logp, _on(sc.reward, rl)).sum()
    if cfg.kl_coef > 0:  # exact KL(pi || ref): k1 weighted by pi(leaf) WITH gradient
        loss = loss + cfg.kl_coef * leaf_kl(logp, ref_logp).sum()
    return loss if isinstance(policy, TabularPolicy) else loss / len(rl)


def _step_size(lr: float | torch.Tensor | None, default: float, params: torch.Tensor):
    """The SGD step size: ``default`` (a config's float) or a per-seed [S] tensor broadcast over params."""
    if lr is None:
        return default
    return torch.as_tensor(lr, dtype=params.dtype).reshape(-1, *[1] * (params.dim() - 1))


def _grpo_update(sc, policy, params, ref_params, cfg, gen, lr=None, z=None, logp_leaf=None):
    """One GRPO step: sample G leaves per prompt from each seed's stream, then ``num_iterations`` clipped
    updates. ``z`` (the RL prompts' node logits of ``params``, requiring grad through ``params``) and
    ``logp_leaf`` (its leaf log-probs, detached) spare the caller's forward pass when given."""
    g, rl = sc.geometry, sc.rl_prompts
    S, P_rl, G = sc.num_seeds, len(rl), cfg.num_generations
    if z is None:
        params = params.detach().requires_grad_(True)
        z = policy.prompt_logits(params, rl)
    with torch.no_grad():
        p = (g.leaf_logp(z.detach()) if logp_leaf is None else logp_leaf).exp()  # (S, P_rl, L)
        leaves = gen.sample_leaves(p, G)  # (S, P_rl, G): each seed from its own stream
        rewards = torch.gather(_on(sc.reward, rl), 2, leaves)  # (S, P_rl, G)
        # per seed: "batch" scales by the std of the seed's own P_rl * G rewards, never across seeds;
        # "group" and "none" act group by group, so one call serves every seed
        if cfg.adv_scale == "batch":
            adv = torch.cat([group_advantages(r, scale=cfg.adv_scale) for r in rewards]).reshape(-1)
        else:
            adv = group_advantages(rewards.reshape(S * P_rl, G), scale=cfg.adv_scale).reshape(-1)
        ref_logp = sequence_logp(policy.prompt_logits(ref_params, rl), leaves, g) if cfg.kl_coef > 0 else None
        old_logp = None
    scale = 1.0 if isinstance(policy, TabularPolicy) else 1.0 / P_rl
    for it in range(cfg.num_iterations):
        if it > 0:
            params = params.detach().requires_grad_(True)
            z = policy.prompt_logits(params, rl)
        logp = sequence_logp(z, leaves, g)  # (S*P_rl*G, H)
        if old_logp is None:
            old_logp = logp.detach()
        per_token = grpo_per_token(
            logp,
            old_logp,
            ref_logp,
            adv,
            epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high,
            kl_coef=cfg.kl_coef,
        )
        # Per prompt (tabular) or per seed (shared): a seed's batch is its P_rl * G sequences, the
        # seeds are independent groups; dr_grpo's max_completion_length is the horizon H.
        mask = torch.ones_like(per_token)
        loss = normalise(per_token, mask, cfg.loss_type, Counts.of(mask, g.H, groups=S)) * (P_rl * scale)
        (grad,) = torch.autograd.grad(loss, params)
        params = params.detach() - _step_size(lr, cfg.rl_lr, params) * grad
    return params.detach()


# ----------------------------------------------------------------------------- driver
def run_method(
    sc: Scenario,
    method: str | Method,
    cfg: PipelineConfig,
    policy: Policy | None = None,
    escape_threshold: float | None = None,
    sft_lrs: torch.Tensor | None = None,
    rl_lrs: torch.Tensor | None = None,
    record_steps: dict[str, set[int]] | None = None,
    rollout_seeds: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Run base -> SFT(method) -> RL on every seed of ``sc`` and record metrics at every step.

    ``method``: a ``toybench.methods`` spec (``"gift@2"``) or a ``Method``.
    Returns a long DataFrame with one row per seed x stage x step: columns ``method`` (the spec as
    given; a ``Method`` gives its canonical spelling), ``kind``, ``value`` (the ``@`` constant),
    ``seed`` (index into the scenario's seeds), ``stage`` ('sft' | 'rl'), ``step`` (0 = the
    stage's starting point), ``global_step``, one column per metric on the RL (training) prompts,
    and ``pear_degenerate`` (bool: a PEAR method with behaviour log-probs from the data, on a seed
    whose data-generating policy is deterministic, ``Scenario.behavior_deterministic``: its rho_t
    are not importance ratios). Held-out prompts: when ``sc.eval_prompts`` is not None (shared
    parameters, ``SharedBandit``), every metric is also computed on the held-out eval prompts, which
    neither SFT nor RL sees, as the column ``eval_<metric>`` (``eval_J``, ``eval_pass@4``, ...);
    without eval prompts (per-prompt parameters) these columns are absent. For method 'none' the
    SFT stage records the unchanged base policy. With ``escape_threshold``, ``df.attrs["escape"]``
    holds the per-prompt escape times of the RL stage (``escape_frame``). ``gift_seq`` needs the
    tree's enumeration, which every tabular scenario has. ``sft_lrs`` / ``rl_lrs`` ([S] tensors, None:
    ``cfg.sft_lr`` / ``cfg.rl_lr``) give every seed its own step size, so one run can hold several
    learning-rate configurations side by side (seeds stay independent). ``record_steps`` (None: every
    step) keeps only the rows of those steps per stage, e.g. ``{"sft": {40}, "rl": {20, 80}}``; the
    dynamics, and the per-prompt J that the escape times need at every RL step, are unchanged.
    ``rollout_seeds`` ([S] ints, None: 0 .. S-1): GRPO's rollout stream of each seed
    (``rollouts.RolloutStreams`` under ``cfg.grpo_seed``): a seed's samples depend only on its stream,
    so giving the seeds' own numbers makes seed s alone equal seed s in any batch, and every method run
    on those seeds meets the same random numbers.
    """
    cfg.validate()
    name = method if isinstance(method, str) else str(method)
    spec = Method.parse(method)
    policy = policy or make_policy(sc)
    params = policy.init()
    rec = _Recorder(sc, policy, cfg, record_steps)
    params = _sft_stage(sc, policy, params, spec, cfg, _step_size(sft_lrs, cfg.sft_lr, params), rec)
    _rl_stage(sc, policy, params, cfg, rl_lrs, rec, rollout_seeds)
    if not rec.records:
        raise ValueError(f"record_steps {record_steps} selects no step of this run")
    df = _to_frame(rec.records, name, spec, sc.num_seeds, list(rec.records[0][2]), cfg.sft_steps)
    degenerate = sc.behavior_deterministic.numpy() & spec.needs_behavior_logp
    df.insert(df.columns.get_loc(metric_names(cfg)[-1]) + 1, "pear_degenerate", degenerate[df["seed"]])
    if escape_threshold is not None:
        df.attrs["escape"] = escape_frame(torch.stack(rec.J_rl), escape_threshold, name)
    return df


class _Recorder:
    """The metrics of a run at its recorded steps (``record_steps``; None: every step), and the
    per-prompt J at every RL step (the escape-time analysis, T5)."""

    def __init__(self, sc: Scenario, policy: Policy, cfg: PipelineConfig, record_steps):
        self.sc, self.policy, self.cfg, self.record_steps = sc, policy, cfg, record_steps
        self.const = eval_constants(sc)
        self.const_eval = eval_constants(sc, "eval") if sc.eval_prompts is not None else None
        self.records: list[tuple[str, int, dict]] = []
        self.J_rl: list[torch.Tensor] = []

    def wanted(self, stage: str, step: int) -> bool:
        return self.record_steps is None or step in self.record_steps.get(stage, ())

    def __call__(self, stage: str, step: int, params: torch.Tensor, logp: torch.Tensor | None = None):
        """Metrics at a recorded step (all prompts' logits only then); J per prompt at every RL step."""
        sc, policy, const = self.sc, self.policy, self.const
        if not self.wanted(stage, step):
            if stage == "rl":  # escape times: J per prompt at every RL step
                if logp is None:
                    logp = sc.geometry.leaf_logp(policy.prompt_logits(params, const["prompts"]))
                self.J_rl.append((logp.exp() * const["reward"]).sum(-1))
            return
        z = policy.node_logits(params)
        m = evaluate(sc, z, self.cfg, const, per_prompt=True, logp=logp)
        if stage == "rl":
            self.J_rl.append(m["J"])
        row = {k: v.mean(1) for k, v in m.items()}
        if self.const_eval is not None:
            row.update({f"eval_{k}": v for k, v in evaluate(sc, z, self.cfg, self.const_eval).items()})
        self.records.append((stage, step, row))


def _sft_stage(sc, policy, params, spec: Method, cfg: PipelineConfig, sft_lr, record: _Recorder):
    """``cfg.sft_steps`` SGD steps of ``spec``'s SFT loss (none for ``none``); returns the parameters."""
    teacher = spec.init_state(params).teacher
    demo = _DemoRows.of(sc, not spec.couples_rows)  # the distinct demonstrations and their counts
    base_seq = demo.logits(sc.base_logits)
    seq_target = sequence_target(sc, spec["beta"])[demo.rows] if spec.needs_sequence_target else None
    if record.wanted("sft", 0):
        record("sft", 0, params)
    for step in range(1, cfg.sft_steps + 1):
        if spec.kind != "none":
            params = params.detach().requires_grad_(True)
            loss = _sft_loss(sc, policy, params, teacher, spec, base_seq, seq_target, demo)
            (grad,) = torch.autograd.grad(loss, params)
            params = params.detach() - sft_lr * grad
            if spec.ema_due(step):
                teacher = spec.ema_update(teacher, params)
        if record.wanted("sft", step):
            record("sft", step, params)
    return params


def _rl_stage(
    sc, policy, params, cfg: PipelineConfig, rl_lrs, record: _Recorder, rollout_seeds=None
) -> torch.Tensor:
    """``cfg.rl_steps`` steps of exact PG or GRPO from ``params`` (the KL reference); the parameters.
    ``rollout_seeds``: GRPO's stream of each seed (``run_method``)."""
    rl_lr = _step_size(rl_lrs, cfg.rl_lr, params)
    ref_params = params.detach().clone()
    with torch.no_grad():
        ref_logp = sc.geometry.leaf_logp(policy.prompt_logits(ref_params, sc.rl_prompts))
    S = sc.num_seeds
    gen = RolloutStreams(cfg.grpo_seed, torch.arange(S) if rollout_seeds is None else rollout_seeds)
    if cfg.rl_algorithm == "exact_pg":  # one forward pass serves both the record and the gradient
        for step in range(cfg.rl_steps + 1):
            params = params.detach().requires_grad_(step < cfg.rl_steps)
            logp = sc.geometry.leaf_logp(policy.prompt_logits(params, sc.rl_prompts))  # (S, P_rl, L)
            record("rl", step, params.detach(), logp.detach())
            if step < cfg.rl_steps:
                loss = exact_pg_loss(sc, policy, params, ref_logp, cfg, logp=logp)
                (grad,) = torch.autograd.grad(loss, params)
                params = params.detach() - rl_lr * grad
    else:  # one forward pass serves the record, the sampling and the first update
        for step in range(cfg.rl_steps + 1):
            params = params.detach().requires_grad_(step < cfg.rl_steps)
            z = policy.prompt_logits(params, sc.rl_prompts)
            logp = sc.geometry.leaf_logp(z.detach())  # (S, P_rl, L)
            record("rl", step, params.detach(), logp)
            if step < cfg.rl_steps:
                params = _grpo_update(sc, policy, params, ref_params, cfg, gen, rl_lrs, z, logp)
    return params


def escape_frame(J: torch.Tensor, threshold: float, method: str) -> pd.DataFrame:
    """Per (seed, prompt): J at the start of RL and the first RL step with J >= threshold (NaN if never).

    J: [R, S, P] per-prompt J at RL steps 0..R-1. One row per seed x prompt.
    """
    R, S, P = J.shape
    hit = J >= threshold
    first = torch.where(
        hit.any(0), hit.float().argmax(0).double(), torch.tensor(float("nan"), dtype=torch.float64)
    )
    return pd.DataFrame(
        {
            "method": method,
            "seed": np.repeat(np.arange(S), P),
            "prompt": np.tile(np.arange(P), S),
            "initial": J[0].double().reshape(-1).numpy(),
            "steps": first.reshape(-1).numpy(),
            "reached": hit.any(0).reshape(-1).numpy(),
            "budget": R - 1,
        }
    )


def _to_frame(records, name: str, spec: Method, S: int, names: list[str], sft_steps: int) -> pd.DataFrame:
    vals = np.stack(
        [np.stack([m[k].double().numpy() for k in names], -1) for _, _, m in records]
    )  # (R, S, M)
    R = len(records)
    stage = np.repeat([s for s, _, _ in records], S)
    step = np.repeat([t for _, t, _ in records], S)
    df = pd.DataFrame(vals.reshape(R * S, -1), columns=names)
    df.insert(0, "global_step", step + np.where(stage == "rl", sft_steps + 1, 0))
    df.insert(0, "step", step)
    df.insert(0, "stage", stage)
    df.insert(0, "seed", np.tile(np.arange(S), R))
    df.insert(0, "value", np.nan if spec.value is None else spec.value)
    df.insert(0, "kind", spec.kind)
    df.insert(0, "method", name)
    return df
