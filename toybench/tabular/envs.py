"""Seeded tabular environments for the SFT -> RL comparison, batched over seeds.

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

Knobs: ``wrong_demo_frac`` f with ``error_unit`` (``"prompt"``: the teacher is confidently
wrong on a fraction f of prompts, all their demonstrations; ``"demo"``: each demonstration is
independently the teacher's mistake w.p. f), ``demos_per_prompt`` (n), ``data_source``
(``"expert"``: concentrated on one correct answer/strategy; ``"behavior"``: rejection-sampled
from pi_beta != pi_base, PEAR's setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from toybench.config import require

__all__ = ["TreeGeometry", "Scenario", "MultiAnswerBandit", "SharedBandit", "ReasoningTree"]


# ----------------------------------------------------------------------------- geometry
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
        # log_softmax over a short last axis is slow on CPU; over the node axis it vectorises (10x here)
        node_logp = torch.log_softmax(node_logits.transpose(-1, -2), -2).transpose(-1, -2)  # (..., N, V)
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
        node_logp = torch.log_softmax(node_logits.transpose(-1, -2), -2).transpose(-1, -2)  # (..., N, V)
        lead = node_logp.shape[:-2]
        pre = node_logp[..., 0, :]  # (..., V): prefixes of length 1
        off = 1
        for t in range(1, self.H):
            pre = (pre.unsqueeze(-1) + node_logp[..., off : off + V**t, :]).reshape(*lead, V ** (t + 1))
            off += V**t
        return pre

    def occupancy(self, q: torch.Tensor) -> torch.Tensor:
        """d(s) = probability of reaching internal node s, from leaf probabilities: [..., L] -> [..., N]."""
        V, H, L = self.V, self.H, self.num_leaves
        return torch.cat([q.reshape(*q.shape[:-1], V**t, L // V**t).sum(-1) for t in range(H)], -1)

    def token_logp_from_leaf_dist(self, q: torch.Tensor) -> torch.Tensor:
        """Per-token conditional log-probs of a leaf distribution q [..., L] -> [..., L, H].

        log q(a_t | a_<t) = log m_{t+1} - log m_t with m_t the mass of the length-t prefix
        (leaves sharing a prefix are contiguous in lexicographic order). Zero-mass prefixes
        get a large negative value instead of -inf.
        """
        V, H, L = self.V, self.H, self.num_leaves
        masses = []
        for t in range(H + 1):
            m = q.reshape(*q.shape[:-1], V**t, L // V**t).sum(-1)  # (..., V^t)
            masses.append(m.repeat_interleave(L // V**t, dim=-1))  # (..., L)
        logm = torch.log(torch.stack(masses, -1).clamp_min(1e-30))  # (..., L, H+1)
        return logm[..., 1:] - logm[..., :-1]


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


def _data(geom, reward, base_logits, behavior_logits, expert_good, expert_bad, cfg, gen):
    """Demos, their data-policy token log-probs and the held-out distribution for one seed.

    With ``error_unit="demo"`` each demo is independently the teacher's mistake w.p. f; with
    ``"prompt"`` the teacher is wrong on a fraction f of prompts (on all their demos, held-out
    ones included), a systematically imperfect teacher.
    """
    f, n, P = cfg["wrong_demo_frac"], cfg["demos_per_prompt"], reward.shape[0]
    if cfg["data_source"] == "expert":
        q_good, q_bad = expert_good, expert_bad
    else:  # rejection sampling from pi_beta with a verifier that lets failures through at rate f
        pb = geom.leaf_token_logp(behavior_logits).sum(-1).exp()  # (P, L)
        q_good = pb * (reward > 0) + 1e-12
        q_bad = pb * (reward == 0) + 1e-12
        q_good, q_bad = q_good / q_good.sum(-1, keepdim=True), q_bad / q_bad.sum(-1, keepdim=True)
    if cfg["error_unit"] == "prompt":
        confused = (torch.rand(P, generator=gen) < f).float()[:, None]  # (P, 1)
        teacher = (1 - confused) * q_good + confused * q_bad  # (P, L)
        q_good = q_bad = teacher
    else:
        teacher = (1 - f) * q_good + f * q_bad  # (P, L): the data distribution

    def sample(prompts, m):
        good = torch.multinomial(q_good[prompts], m, replacement=True, generator=gen)  # (P', m)
        bad = torch.multinomial(q_bad[prompts], m, replacement=True, generator=gen)
        return torch.where(torch.rand(len(prompts), m, generator=gen) < f, bad, good)

    sft, rl = cfg["sft_prompts"], cfg["rl_prompts"]
    demos = sample(sft, n)  # (P_sft, n)
    logp_tok = geom.token_logp_from_leaf_dist(teacher[sft])  # (P_sft, L, H)
    beh = torch.gather(logp_tok, 1, demos[..., None].expand(-1, -1, geom.H))  # (P_sft, n, H)
    held = sample(rl, cfg["heldout_demos"])  # (P_rl, m)
    heldout = torch.zeros(len(rl), geom.num_leaves).scatter_add_(1, held, torch.ones(held.shape))
    return demos, beh, heldout / heldout.sum(-1, keepdim=True)


def _stack(name, geom, per_seed, sft_prompts, rl_prompts) -> Scenario:
    keys = ["reward", "base_logits", "behavior_logits", "demo_leaves", "demo_behavior_logp", "heldout"]
    extra = {k: torch.stack([d[k] for d in per_seed]) for k in ("features", "theta0") if k in per_seed[0]}
    return Scenario(
        name, geom, *[torch.stack([d[k] for d in per_seed]) for k in keys], sft_prompts, rl_prompts, **extra
    )


def _common_cfg(num_prompts, wrong_demo_frac, demos_per_prompt, heldout_demos, data_source, error_unit):
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


def _shift_to_mass(z: torch.Tensor, good: torch.Tensor, mass: float) -> torch.Tensor:
    """Add c(x) to the logits of the `good` answers so that their softmax mass is exactly `mass`."""
    A = (z.exp() * good).sum(-1, keepdim=True)
    B = (z.exp() * ~good).sum(-1, keepdim=True)
    return z + good * torch.log(mass * B / ((1 - mass) * A))


# ----------------------------------------------------------------------------- bandit
class MultiAnswerBandit(Scenario):
    """P prompts x V answers, ``num_correct`` correct answers per prompt, per-prompt parameters.

    pi_base: Gaussian logits (std ``base_scale``) shifted so that exactly ``base_correct_mass`` of
    the mass is on correct answers. Expert: one correct answer per prompt (chosen at random);
    its mistake is the most plausible wrong answer under pi_base. pi_beta: pi_base with extra
    Gaussian logit noise (std ``behavior_shift``). SFT and RL use the same prompts.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        num_prompts: int = 16,
        V: int = 32,
        num_correct: int = 4,
        base_correct_mass: float = 0.2,
        base_scale: float = 1.0,
        behavior_shift: float = 1.0,
        wrong_demo_frac: float = 0.1,
        demos_per_prompt: int = 8,
        heldout_demos: int = 64,
        data_source: str = "expert",
        error_unit: str = "prompt",
    ):
        cfg = _common_cfg(
            num_prompts, wrong_demo_frac, demos_per_prompt, heldout_demos, data_source, error_unit
        )
        if not 1 <= num_correct < V:
            raise ValueError(f"num_correct must be in [1, V-1], got {num_correct}")
        require({"base_correct_mass": base_correct_mass}, within={"base_correct_mass": (1e-6, 1 - 1e-6)})
        if len(seeds) < 1:
            raise ValueError("seeds must be a non-empty sequence of ints")
        geom = TreeGeometry(V, 1)
        prompts = torch.arange(num_prompts)
        cfg.update(sft_prompts=prompts, rl_prompts=prompts)
        per_seed = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            P = num_prompts
            good = torch.rand(P, V, generator=gen).argsort(-1) < num_correct  # (P, V)
            z = _shift_to_mass(base_scale * torch.randn(P, V, generator=gen), good, base_correct_mass)
            zb = z + behavior_shift * torch.randn(P, V, generator=gen)
            y_star = torch.multinomial(good.float(), 1, generator=gen)[:, 0]
            w = torch.where(good, -torch.inf, z).argmax(-1)
            d = dict(reward=good.float(), base_logits=z[:, None], behavior_logits=zb[:, None])
            eye = torch.eye(V)
            d["demo_leaves"], d["demo_behavior_logp"], d["heldout"] = _data(
                geom, d["reward"], d["base_logits"], d["behavior_logits"], eye[y_star], eye[w], cfg, gen
            )
            per_seed.append(d)
        self.__dict__.update(vars(_stack("bandit", geom, per_seed, prompts, prompts)))


class SharedBandit(Scenario):
    """Log-linear bandit: logits(x, y) = theta . phi(x, y), theta in R^d shared by all prompts.

    phi ~ N(0, 1/d) per (prompt, answer); a hidden direction u decides correctness (the
    ``num_correct`` answers with the largest u . phi); the expert picks, among the correct
    answers, the one its own style direction v prefers; pi_base has theta0 = ``base_align`` u +
    noise. SFT prompts (first ``sft_prompts``) and RL prompts (the rest) are disjoint, so SFT
    moves the policy on RL prompts only through the shared theta.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        num_prompts: int = 32,
        sft_prompts: int = 16,
        V: int = 16,
        d: int = 8,
        num_correct: int = 3,
        base_align: float = 1.0,
        base_noise: float = 1.0,
        behavior_shift: float = 1.0,
        wrong_demo_frac: float = 0.1,
        demos_per_prompt: int = 8,
        heldout_demos: int = 64,
        data_source: str = "expert",
        error_unit: str = "prompt",
    ):
        cfg = _common_cfg(
            num_prompts, wrong_demo_frac, demos_per_prompt, heldout_demos, data_source, error_unit
        )
        if not 1 <= sft_prompts < num_prompts:
            raise ValueError(f"sft_prompts must be in [1, num_prompts-1], got {sft_prompts}")
        if not 1 <= num_correct < V:
            raise ValueError(f"num_correct must be in [1, V-1], got {num_correct}")
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        geom = TreeGeometry(V, 1)
        sft_idx, rl_idx = torch.arange(sft_prompts), torch.arange(sft_prompts, num_prompts)
        cfg.update(sft_prompts=sft_idx, rl_prompts=rl_idx)
        per_seed = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            P = num_prompts
            phi = torch.randn(P, V, d, generator=gen) / d**0.5  # (P, V, d)
            u = torch.randn(d, generator=gen)
            u = u / u.norm() * d**0.5
            v = torch.randn(d, generator=gen)
            good = (phi @ u).argsort(-1).argsort(-1) >= V - num_correct  # (P, V)
            theta0 = base_align * u / d**0.5 + base_noise * torch.randn(d, generator=gen)
            z = phi @ theta0  # (P, V)
            zb = z + behavior_shift * torch.randn(P, V, generator=gen)
            y_star = torch.where(good, phi @ v, -torch.inf).argmax(-1)
            w = torch.where(good, -torch.inf, z).argmax(-1)
            d_ = dict(reward=good.float(), base_logits=z[:, None], behavior_logits=zb[:, None])
            eye = torch.eye(V)
            d_["demo_leaves"], d_["demo_behavior_logp"], d_["heldout"] = _data(
                geom, d_["reward"], d_["base_logits"], d_["behavior_logits"], eye[y_star], eye[w], cfg, gen
            )
            d_.update(features=phi[:, None], theta0=theta0)
            per_seed.append(d_)
        self.__dict__.update(vars(_stack("bandit_shared", geom, per_seed, sft_idx, rl_idx)))


# ----------------------------------------------------------------------------- token MDP
class ReasoningTree(Scenario):
    """Reasoning-tree token MDP: strategy token, H-2 execution tokens, answer token.

    Prompt x has ``num_good`` strategies that work (different ones on different prompts), one
    correct execution path per (x, strategy) and one correct answer a(x). A leaf is rewarded
    iff its strategy works on x, its execution follows the path and its answer is a(x).
    pi_base: high-entropy fork (Gaussian logits, std ``fork_scale``); on the execution path the
    right token gets a margin ``exec_margin`` (near-deterministic "factual" tokens); after an
    on-path execution the answer node puts ``answer_margin`` on a(x) if the strategy works and
    on a confident wrong answer otherwise; off-path nodes have N(0, 1) logits. Expert demos use
    one working strategy per prompt; the expert's mistake is a failing strategy executed
    on-path. pi_beta: pi_base plus N(0, ``behavior_shift``^2) logit noise at every node.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        num_prompts: int = 8,
        V: int = 5,
        H: int = 4,
        num_good: int = 2,
        fork_scale: float = 0.5,
        exec_margin: float = 3.0,
        answer_margin: float = 3.0,
        behavior_shift: float = 1.0,
        wrong_demo_frac: float = 0.1,
        demos_per_prompt: int = 8,
        heldout_demos: int = 64,
        data_source: str = "expert",
        error_unit: str = "prompt",
    ):
        cfg = _common_cfg(
            num_prompts, wrong_demo_frac, demos_per_prompt, heldout_demos, data_source, error_unit
        )
        if H < 3:
            raise ValueError(f"H must be >= 3 (strategy, execution, answer), got {H}")
        if not 1 <= num_good < V:
            raise ValueError(f"num_good must be in [1, V-1], got {num_good}")
        if V**H > 2_000_000:
            raise ValueError(f"V**H = {V**H} leaves is too many for exact enumeration")
        geom = TreeGeometry(V, H)
        prompts = torch.arange(num_prompts)
        cfg.update(sft_prompts=prompts, rl_prompts=prompts)
        L, P = geom.num_leaves, num_prompts
        tok = geom.path_tokens  # (L, H)
        per_seed = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            works = torch.rand(P, V, generator=gen).argsort(-1) < num_good  # (P, V) strategies
            path = torch.randint(0, V, (P, V, H - 2), generator=gen)  # execution path per strategy
            answer = torch.randint(0, V, (P,), generator=gen)
            wrong_answer = (answer + torch.randint(1, V, (P,), generator=gen)) % V
            s = tok[:, 0]  # (L,)
            on_path = (tok[None, :, 1:-1] == path[:, s]).all(-1)  # (P, L)
            good_s = works[:, s]  # (P, L)
            reward = (on_path & good_s & (tok[None, :, -1] == answer[:, None])).float()
            z = torch.randn(P, geom.num_nodes, V, generator=gen)  # off-path nodes: N(0, 1)
            z[:, 0] = fork_scale * torch.randn(P, V, generator=gen)
            for t in range(1, H):  # raise the right token at on-path nodes of every strategy
                leaves = torch.arange(0, L, V ** (H - t))  # one leaf per depth-t prefix
                nodes = geom.path_nodes[leaves, t]
                on = (tok[None, leaves, 1:t] == path[:, tok[leaves, 0], : t - 1]).all(-1)  # (P, V^t)
                if t < H - 1:
                    target = path[:, tok[leaves, 0], t - 1]
                    margin = exec_margin
                else:
                    target = torch.where(works[:, tok[leaves, 0]], answer[:, None], wrong_answer[:, None])
                    margin = answer_margin
                bump = margin * on[..., None] * torch.nn.functional.one_hot(target, V)  # (P, V^t, V)
                z[:, nodes] += bump
            zb = z + behavior_shift * torch.randn(P, geom.num_nodes, V, generator=gen)
            ids = torch.arange(V)
            s_exp = torch.where(works, ids, V).amin(-1)  # the expert's strategy: first working one
            s_bad = torch.where(works, V, ids).amin(-1)  # its mistake: first failing one
            expert_good = ((s[None] == s_exp[:, None]) & on_path & (reward > 0)).float()
            expert_bad = (
                (s[None] == s_bad[:, None]) & on_path & (tok[None, :, -1] == wrong_answer[:, None])
            ).float()
            d = dict(reward=reward, base_logits=z, behavior_logits=zb)
            d["demo_leaves"], d["demo_behavior_logp"], d["heldout"] = _data(
                geom, reward, z, zb, expert_good, expert_bad, cfg, gen
            )
            per_seed.append(d)
        self.__dict__.update(vars(_stack("tree", geom, per_seed, prompts, prompts)))
