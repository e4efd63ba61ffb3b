"""What the seeded tabular environments share: the prefix-tree geometry, the batched ``Scenario`` record
and the data generation (demonstrations, held-out data); the environments are in ``bandit`` and ``tree``.

Every environment is a prefix tree of depth ``H`` over a vocabulary of ``V`` tokens, seen
from ``P`` prompts and instantiated for ``S`` seeds at once (one independent random instance
per seed, each drawn from its own generator so that seed ``s`` is the same instance whatever
``S`` is). The bandit is the tree with ``H = 1``.

Indexing (shared with ``theory/mdp.py``): internal nodes in breadth-first order, the node of
prefix ``(a_0..a_{t-1})`` at depth ``t`` has index ``(V^t - 1)/(V - 1) + sum_j a_j V^(t-1-j)``;
leaves (complete sequences) are in lexicographic order, ``leaf = sum_t a_t V^(H-1-t)``.
Tabular logits are ``[S, P, N, V]`` with ``N = (V^H - 1)/(V - 1)`` internal nodes.

Ground truth exposed by every environment (tensors, leading axes ``[S, P]``):
``reward [S,P,L]`` (0/1, verified answer), ``correct [S,P,L]`` (bool), ``base_logits
[S,P,N,V]`` (pi_base), ``behavior_logits`` (pi_beta, a different policy), the SFT data
``demo_leaves [S,P_sft,n]`` with the data policy's per-token log-probs ``demo_behavior_logp
[S,P_sft,n,H]``, a held-out data distribution ``heldout [S,P_rl,L]`` on the RL prompts, and the
prompt split ``sft_prompts`` / ``rl_prompts`` (equal with per-prompt parameters, disjoint
with shared parameters). The optimal value is 1 on every prompt (each has a correct leaf).

Generalisation: settings with SHARED parameters (``SharedBandit``) also expose held-out
evaluation prompts ``eval_prompts [P_eval]`` (never used by SFT or RL) with their own held-out
data ``eval_heldout [S,P_eval,L]``; the pipeline reports its metrics on them as ``eval_*``
columns. Settings with per-prompt (tabular) parameters (``MultiAnswerBandit``, ``ReasoningTree``)
cannot measure generalisation: a prompt no update touches stays at pi_base, so they have
``eval_prompts = None``. The eval prompts are drawn from a second generator per seed
(``eval_generator``), so adding them leaves every other tensor of the instance unchanged.

Knobs: ``wrong_demo_frac`` f with ``error_unit`` (``"prompt"``: the teacher is confidently
wrong on a fraction f of prompts, all their demonstrations; ``"demo"``: each demonstration is
independently the teacher's mistake w.p. f), ``demos_per_prompt`` (n), ``data_source``
(``"expert"``: concentrated on one correct answer/strategy; ``"behavior"``: sampled from the
stochastic pi_beta != pi_base and filtered by a verifier, PEAR's setting), ``base_correct_mass``
(the base's initial mass on correct answers, bandits, or on working strategies, tree).

Behaviour log-probs (PEAR, docs/methods.md §1.5 and §6.5): ``demo_behavior_logp`` is log pi(y_t | y_<t)
of the policy that GENERATED each demonstration, recorded when it is drawn. With
``data_source="behavior"`` that is pi_beta itself (``behavior_logits``), stochastic; the verifier
that filters the samples is not part of pi_beta, as when a model's samples are filtered for a
rejection-sampling data set. With ``data_source="expert"`` the generator is the expert's
distribution, which is deterministic on a prompt (``error_unit="prompt"``): every recorded
log-prob is 0, so PEAR's ratios rho_t = clip(log pi_theta - 0) sit at the lower clip unless
pi_theta(y_t) > e^-0.08, and its weights are a fixed positional decay, not importance weights:
``Scenario.behavior_deterministic`` flags it per seed (the pipeline's ``pear_degenerate``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from toybench.config import require

__all__ = [
    "TreeGeometry",
    "Scenario",
    "demo_data",
    "sample_heldout",
    "stack_seeds",
    "shared_scenario",
    "data_config",
    "shift_to_mass",
    "mean_mass_shift",
    "eval_generator",
    "builder_data_config",
    "shared_prompts",
    "hidden_directions",
]


# ----------------------------------------------------------------------------- geometry
def _node_log_softmax(node_logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the token axis of [..., N, V], computed along the longer of the two axes.

    A log-softmax over a short last axis is slow on CPU; over the node axis of the transposed
    logits it vectorises (10x for the tree's N = 156, V = 5). A bandit (N = 1) keeps the plain form.
    """
    if node_logits.shape[-2] <= node_logits.shape[-1]:
        return torch.log_softmax(node_logits, -1)
    return torch.log_softmax(node_logits.transpose(-1, -2), -2).transpose(-1, -2)


class TreeGeometry:
    """Index tables of the complete V-ary prefix tree of depth H (see module docstring)."""

    def __init__(self, V: int, H: int):
        if V < 2:
            raise ValueError(f"V must be >= 2, got {V}")
        if H < 1:
            raise ValueError(f"H must be >= 1, got {H}")
        self.V, self.H = V, H
        self.num_leaves = V**H
        self.num_nodes = (V**H - 1) // (V - 1)
        leaf = torch.arange(self.num_leaves)
        self.path_tokens = torch.stack([(leaf // V ** (H - 1 - t)) % V for t in range(H)], -1)  # (L, H)
        offsets = [(V**t - 1) // (V - 1) for t in range(H)]
        self.path_nodes = torch.stack([offsets[t] + leaf // V ** (H - t) for t in range(H)], -1)  # (L, H)

    def leaf_token_logp(self, node_logits: torch.Tensor) -> torch.Tensor:
        """log pi(a_t | a_<t) for every leaf and position: [..., N, V] -> [..., L, H]."""
        V, H, L = self.V, self.H, self.num_leaves
        node_logp = _node_log_softmax(node_logits)  # (..., N, V)
        lead = node_logp.shape[:-2]
        out, off = [], 0
        for t in range(
            H
        ):  # depth t: V^t nodes x V children = the V^(t+1) prefixes, each shared by V^(H-t-1) leaves
            x = node_logp[..., off : off + V**t, :].reshape(*lead, V ** (t + 1))
            out.append(x.unsqueeze(-1).expand(*lead, V ** (t + 1), V ** (H - t - 1)).reshape(*lead, L))
            off += V**t
        return torch.stack(out, -1)  # (..., L, H); equals node_logp[..., path_nodes, path_tokens]

    def leaf_logp(self, node_logits: torch.Tensor) -> torch.Tensor:
        """log pi(leaf) = sum_t log pi(a_t | a_<t): [..., N, V] -> [..., L], built depth by depth.

        The prefixes of length t+1 are (prefix of length t, child a) in row-major order, so
        log P(prefix a) = log P(prefix) + log pi(a | prefix) is one broadcast add per depth.
        """
        V = self.V
        node_logp = _node_log_softmax(node_logits)  # (..., N, V)
        lead = node_logp.shape[:-2]
        # one split, not H slices: in backward it is one cat, not H zero-filled copies to add up
        depth = torch.split(node_logp, [V**t for t in range(self.H)], dim=-2)  # (..., V^t, V) each
        pre = depth[0][..., 0, :]  # (..., V): prefixes of length 1
        for t in range(1, self.H):
            pre = (pre.unsqueeze(-1) + depth[t]).reshape(*lead, V ** (t + 1))
        return pre

    def occupancy(self, q: torch.Tensor) -> torch.Tensor:
        """d(s) = probability of reaching internal node s, from leaf probabilities: [..., L] -> [..., N]."""
        V, H, L = self.V, self.H, self.num_leaves
        return torch.cat([q.reshape(*q.shape[:-1], V**t, L // V**t).sum(-1) for t in range(H)], -1)

    def token_logp_from_leaf_dist(self, q: torch.Tensor, leaves: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token conditional log-probs of a leaf distribution q [..., L] -> [..., L, H].

        log q(a_t | a_<t) = log m_{t+1} - log m_t with m_t the mass of the length-t prefix
        (leaves sharing a prefix are contiguous in lexicographic order). Zero-mass prefixes
        get a large negative value instead of -inf. ``leaves`` [..., n] (None: every leaf)
        returns those leaves' rows only, [..., n, H], without the [..., L, H] table.
        """
        V, H, L = self.V, self.H, self.num_leaves
        lead = q.shape[:-1]
        # log of every prefix mass, at the prefix level (V^t values per depth, not L)
        logm = [torch.log(q.reshape(*lead, V**t, L // V**t).sum(-1).clamp_min(1e-30)) for t in range(H + 1)]
        if leaves is None:
            leaves = torch.arange(L).expand(*lead, L)
        out = []
        for t in range(H):  # the leaf's prefixes of length t+1 and t
            long, short = leaves // V ** (H - t - 1), leaves // V ** (H - t)
            out.append(torch.gather(logm[t + 1], -1, long) - torch.gather(logm[t], -1, short))
        return torch.stack(out, -1)  # (..., n, H)

    def gibbs_logp(self, node_logits: torch.Tensor, R: torch.Tensor, beta: float) -> torch.Tensor:
        """Exact sequence-level Gibbs target q(y) ∝ pi(y) exp(beta R(y)) as node conditionals.

        q(a | s) ∝ pi(a | s) W(s a) with W(s) = E_pi[exp(beta R) | s], by soft backward induction
        over the whole tree (the enumeration of ``theory.mdp.gibbs_logits``, which is its oracle).
        node_logits: [..., N, V]; R: [..., L] (broadcast). Returns log q(a | s): [..., N, V].
        """
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        V, H = self.V, self.H
        node_logp = torch.log_softmax(node_logits, -1)
        batch = torch.broadcast_shapes(node_logp.shape[:-2], R.shape[:-1])
        log_w = (beta * R).expand(*batch, self.num_leaves)  # log W of the children at depth t + 1
        out = []
        for t in range(H - 1, -1, -1):
            off = (V**t - 1) // (V - 1)
            tilted = node_logp[..., off : off + V**t, :] + log_w.reshape(*batch, V**t, V)  # (..., V^t, V)
            log_w = torch.logsumexp(tilted, -1)  # (..., V^t)
            out.append(tilted - log_w[..., None])
        return torch.cat(out[::-1], -2)  # (..., N, V), breadth-first


# ----------------------------------------------------------------------------- scenario
@dataclass
class Scenario:
    """What the pipeline needs from an environment (shapes in the module docstring)."""

    name: str
    geometry: TreeGeometry
    reward: torch.Tensor  # (S, P, L)
    base_logits: torch.Tensor  # (S, P, N, V)
    behavior_logits: torch.Tensor  # (S, P, N, V)
    demo_leaves: torch.Tensor  # (S, P_sft, n)
    demo_behavior_logp: torch.Tensor  # (S, P_sft, n, H)
    heldout: torch.Tensor  # (S, P_rl, L)
    sft_prompts: torch.Tensor  # (P_sft,)
    rl_prompts: torch.Tensor  # (P_rl,)
    features: torch.Tensor | None = None  # (S, P, N, V, d): log-linear variant only
    theta0: torch.Tensor | None = None  # (S, d): log-linear base parameters
    eval_prompts: torch.Tensor | None = None  # (P_eval,): held-out prompts (shared parameters only)
    eval_heldout: torch.Tensor | None = None  # (S, P_eval, L): held-out data on the eval prompts
    data_source: str = "expert"  # who generated the demos: "expert" or "behavior" (pi_beta)

    @property
    def behavior_deterministic(self) -> torch.Tensor:
        """[S] bool: the data-generating policy put probability 1 on every demonstrated token of the
        seed (every recorded log pi_beta is 0), so PEAR's importance weights are degenerate."""
        return (self.demo_behavior_logp.flatten(1) > -1e-9).all(-1)

    @property
    def correct(self) -> torch.Tensor:
        return self.reward > 0

    @property
    def num_seeds(self) -> int:
        return self.reward.shape[0]

    def exact_J(self, node_logits: torch.Tensor) -> torch.Tensor:
        """J(x) = sum_leaf pi(leaf | x) r(x, leaf): [S, P, N, V] -> [S, P]."""
        logp = self.geometry.leaf_logp(node_logits)  # (S, P, L)
        return (logp.exp() * self.reward).sum(-1)

    def optimal_value(self) -> torch.Tensor:
        """max_pi J(x) = max_leaf r(x, leaf): [S, P]."""
        return self.reward.amax(-1)


def _data_dists(geom, reward, behavior_logits, expert_good, expert_bad, cfg):
    """(q_good, q_bad) [..., P, L]: the distributions of a correct demo and of a mistake (no randomness)."""
    if cfg["data_source"] == "expert":
        return expert_good, expert_bad
    # samples of pi_beta, filtered by a verifier that lets failures through at rate f
    pb = geom.leaf_token_logp(behavior_logits).sum(-1).exp()  # (..., P, L)
    q_good = pb * (reward > 0) + 1e-12
    q_bad = pb * (reward == 0) + 1e-12
    return q_good / q_good.sum(-1, keepdim=True), q_bad / q_bad.sum(-1, keepdim=True)


def _teachers(geom, reward, behavior_logits, expert_good, expert_bad, cfg, gens):
    """(teacher [S, P, L], sample(rows, m) -> [S, P', m]): the data distributions of S seeds' prompts.

    Tensors have a leading seed axis; ``gens`` holds one generator per seed, and each draw of seed s
    comes from ``gens[s]`` in the order a single-seed build makes it, so a seed's data do not depend
    on the other seeds (the per-seed loops below are over random draws only).
    """
    f = cfg["wrong_demo_frac"]
    q_good, q_bad = _data_dists(geom, reward, behavior_logits, expert_good, expert_bad, cfg)
    if cfg["error_unit"] == "prompt":  # the teacher is wrong on the "confused" prompts
        P = reward.shape[-2]
        confused = torch.stack([(torch.rand(P, generator=g) < f).float() for g in gens])[..., None]
        teacher = (1 - confused) * q_good + confused * q_bad  # (S, P, L)
        q_good = q_bad = teacher
    else:
        teacher = (1 - f) * q_good + f * q_bad  # (S, P, L): the data distribution

    def sample(rows, m):
        out = []
        for qg, qb, g in zip(q_good[:, rows], q_bad[:, rows], gens):
            good = torch.multinomial(qg, m, replacement=True, generator=g)  # (P', m)
            bad = torch.multinomial(qb, m, replacement=True, generator=g)
            out.append(torch.where(torch.rand(len(rows), m, generator=g) < f, bad, good))
        return torch.stack(out)  # (S, P', m)

    return teacher, sample


def _leaf_dist(leaves: torch.Tensor, L: int) -> torch.Tensor:
    """Empirical distribution of sampled leaves [..., m] -> [..., L]."""
    flat = leaves.reshape(-1, leaves.shape[-1])
    counts = torch.zeros(flat.shape[0], L).scatter_add_(1, flat, torch.ones(flat.shape))
    return (counts / counts.sum(-1, keepdim=True)).reshape(*leaves.shape[:-1], L)


def demo_data(geom, reward, behavior_logits, expert_good, expert_bad, cfg, gens):
    """Demos, their generating policy's token log-probs and the held-out distribution, for S seeds.

    Inputs have a leading seed axis ``[S, P, ...]``, ``gens`` one generator per seed (``_teachers``);
    returns ``demo_leaves [S, P_sft, n]``, ``demo_behavior_logp [S, P_sft, n, H]`` and ``heldout
    [S, P_rl, L]``. With ``error_unit="demo"`` each demo is independently the teacher's mistake
    w.p. f; with ``"prompt"`` the teacher is wrong on a fraction f of prompts (on all their demos,
    held-out ones included), a systematically imperfect teacher. The log-probs are those of the
    policy that drew the demo: pi_beta (``behavior_logits``) with ``data_source="behavior"``, the
    expert's distribution otherwise (module docstring).
    """
    teacher, sample = _teachers(geom, reward, behavior_logits, expert_good, expert_bad, cfg, gens)
    sft, rl = cfg["sft_prompts"], cfg["rl_prompts"]
    demos = sample(sft, cfg["demos_per_prompt"])  # (S, P_sft, n)
    if cfg["data_source"] == "behavior":  # recorded when drawn: log pi_beta(y_t | y_<t)
        logp_tok = geom.leaf_token_logp(behavior_logits[:, sft])  # (S, P_sft, L, H)
        beh = torch.gather(logp_tok, 2, demos[..., None].expand(-1, -1, -1, geom.H))  # (S, P_sft, n, H)
    else:  # the teacher's conditionals at the demos' prefixes
        beh = geom.token_logp_from_leaf_dist(teacher[:, sft], demos)  # (S, P_sft, n, H)
    held = sample(rl, cfg["heldout_demos"])  # (S, P_rl, m)
    return demos, beh, _leaf_dist(held, geom.num_leaves)


def sample_heldout(geom, reward, behavior_logits, expert_good, expert_bad, cfg, gens):
    """Held-out data distribution [S, P, L] on every prompt given (the eval prompts), from ``gens``."""
    _, sample = _teachers(geom, reward, behavior_logits, expert_good, expert_bad, cfg, gens)
    return _leaf_dist(sample(torch.arange(reward.shape[-2]), cfg["heldout_demos"]), geom.num_leaves)


def eval_generator(seed: int) -> torch.Generator:
    """The second generator of seed ``seed``: draws the held-out eval prompts (module docstring)."""
    return torch.Generator().manual_seed(int(seed) + 1_000_003)


def shared_prompts(cfg: dict, seeds, num_prompts: int, sft_prompts: int, eval_prompts: int):
    """The prompt split and generators of a shared-parameter setting: records the SFT / RL prompt
    indices in ``cfg`` and returns ``(eval_idx, gens, ges)`` (eval prompts follow the training ones;
    ``ges`` is empty without eval prompts)."""
    cfg.update(sft_prompts=torch.arange(sft_prompts), rl_prompts=torch.arange(sft_prompts, num_prompts))
    eval_idx = torch.arange(num_prompts, num_prompts + eval_prompts) if eval_prompts else None
    gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    ges = [eval_generator(seed) for seed in seeds] if eval_prompts else []
    return eval_idx, gens, ges


def hidden_directions(k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden correctness direction u (norm sqrt(k)) and the expert's style direction v, drawn
    in that order from ``gen``."""
    u = torch.randn(k, generator=gen)
    return u / u.norm() * k**0.5, torch.randn(k, generator=gen)


def stack_seeds(per_seed: list[dict]) -> dict[str, torch.Tensor]:
    """Per-seed dicts of tensors -> one dict of tensors with a leading seed axis."""
    return {k: torch.stack([d[k] for d in per_seed]) for k in per_seed[0]}


def shared_scenario(name, geom, cfg, per_seed, per_seed_eval, gens, ges, eval_prompts, data_source):
    """The ``Scenario`` fields of a shared-parameter (log-linear) setting, from per-seed dicts.

    ``per_seed``: the training prompts' ``reward``, ``base_logits``, ``behavior_logits``, ``features``,
    ``theta0`` and the expert's ``good`` / ``bad`` leaf distributions; ``per_seed_eval`` (empty without
    eval prompts): the same per-prompt tensors on the eval prompts, drawn from ``ges``. The data are
    drawn batched (``demo_data``, ``sample_heldout``) and the eval prompts follow the training prompts.
    """
    t = stack_seeds(per_seed)  # (S, P, ...): the training prompts
    data = demo_data(geom, t["reward"], t["behavior_logits"], t["good"], t["bad"], cfg, gens)
    extra = {}
    if per_seed_eval:
        e = stack_seeds(per_seed_eval)
        extra["eval_heldout"] = sample_heldout(
            geom, e["reward"], e["behavior_logits"], e["good"], e["bad"], cfg, ges
        )
        for k in ("reward", "base_logits", "behavior_logits", "features"):
            t[k] = torch.cat([t[k], e[k]], 1)
    return dict(
        name=name,
        geometry=geom,
        reward=t["reward"],
        base_logits=t["base_logits"],
        behavior_logits=t["behavior_logits"],
        demo_leaves=data[0],
        demo_behavior_logp=data[1],
        heldout=data[2],
        sft_prompts=cfg["sft_prompts"],
        rl_prompts=cfg["rl_prompts"],
        features=t["features"],
        theta0=t["theta0"],
        eval_prompts=eval_prompts,
        data_source=data_source,
        **extra,
    )


def data_config(
    num_prompts,
    wrong_demo_frac,
    demos_per_prompt,
    heldout_demos,
    data_source,
    error_unit,
    base_correct_mass=None,
    sft_prompts=None,
    eval_prompts=0,
):
    """The data knobs as a dict, validated with the knobs every builder shares (ValueError naming one).

    ``base_correct_mass`` (None: unset) must be in (0, 1); ``sft_prompts`` (None: SFT and RL share
    the prompts) in [1, num_prompts - 1]; ``eval_prompts`` >= 0.
    """
    if base_correct_mass is not None:
        require({"base_correct_mass": base_correct_mass}, within={"base_correct_mass": (1e-6, 1 - 1e-6)})
    if sft_prompts is not None and not 1 <= sft_prompts < num_prompts:
        raise ValueError(f"sft_prompts must be in [1, num_prompts-1], got {sft_prompts}")
    require({"eval_prompts": eval_prompts}, non_negative=("eval_prompts",))
    cfg = dict(
        wrong_demo_frac=wrong_demo_frac,
        demos_per_prompt=demos_per_prompt,
        heldout_demos=heldout_demos,
        data_source=data_source,
        error_unit=error_unit,
    )
    require(
        dict(cfg, num_prompts=num_prompts),
        at_least=dict.fromkeys(("num_prompts", "demos_per_prompt", "heldout_demos"), 1),
        probability=("wrong_demo_frac",),
        one_of={"data_source": ("expert", "behavior"), "error_unit": ("prompt", "demo")},
    )
    return cfg


def builder_data_config(scope: dict) -> dict:
    """``data_config`` of a builder's own arguments: ``scope`` is its ``locals()``, from which the knobs
    that ``data_config`` takes are picked by name (absent ones keep their defaults)."""
    names = inspect.signature(data_config).parameters
    return data_config(**{k: v for k, v in scope.items() if k in names})


def shift_to_mass(z: torch.Tensor, good: torch.Tensor, mass: float) -> torch.Tensor:
    """Add c(x) to the logits of the `good` answers so that their softmax mass is exactly `mass`."""
    A = (z.exp() * good).sum(-1, keepdim=True)
    B = (z.exp() * ~good).sum(-1, keepdim=True)
    return z + good * torch.log(mass * B / ((1 - mass) * A))


def mean_mass_shift(
    z: torch.Tensor, dz: torch.Tensor, good: torch.Tensor, mass: float, iters: int = 80
) -> float:
    """c such that softmax(z + c dz)'s mass on ``good``, averaged over the leading axis, is ``mass``.

    Bisection on [-1000, 1000]; it needs the mass to increase with c (dz larger on good answers).
    z, dz: [P, V]; good: [P, V] bool.
    """
    lo, hi = -1e3, 1e3
    for _ in range(iters):
        c = (lo + hi) / 2
        m = (torch.softmax(z + c * dz, -1) * good).sum(-1).mean()
        lo, hi = (c, hi) if m < mass else (lo, c)
    return (lo + hi) / 2
