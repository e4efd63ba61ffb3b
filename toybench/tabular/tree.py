"""The reasoning-tree token MDP: a strategy fork, near-deterministic execution tokens, a verified answer.

Ground truth and knobs as in ``toybench.tabular.envs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toybench.config import require
from toybench.tabular.envs import (
    Scenario,
    TreeGeometry,
    builder_data_config,
    demo_data,
    hidden_directions,
    mean_mass_shift,
    shared_prompts,
    shared_scenario,
    shift_to_mass,
    stack_seeds,
)

__all__ = ["ReasoningTree", "SharedTree"]


def _structure(geom: TreeGeometry, works, path, answer, wrong_answer) -> dict[str, torch.Tensor]:
    """The reasoning tree's ground truth for P prompts: ``reward`` and ``on_path`` [P, L], and the
    0/1 indicators [P, N, V] of the right execution token (``exec``) and of the answer the base
    believes after an on-path execution (``answer``: a(x) if the strategy works, else the wrong one)."""
    V, H, L = geom.V, geom.H, geom.num_leaves
    tok = geom.path_tokens  # (L, H)
    s = tok[:, 0]  # (L,)
    on_path = (tok[None, :, 1:-1] == path[:, s]).all(-1)  # (P, L)
    reward = (on_path & works[:, s] & (tok[None, :, -1] == answer[:, None])).float()
    ind = {k: torch.zeros(len(answer), geom.num_nodes, V) for k in ("exec", "answer")}
    for t in range(1, H):
        leaves = torch.arange(0, L, V ** (H - t))  # one leaf per depth-t prefix
        nodes = geom.path_nodes[leaves, t]
        on = (tok[None, leaves, 1:t] == path[:, tok[leaves, 0], : t - 1]).all(-1)  # (P, V^t)
        if t < H - 1:
            target, key = path[:, tok[leaves, 0], t - 1], "exec"
        else:
            target = torch.where(works[:, tok[leaves, 0]], answer[:, None], wrong_answer[:, None])
            key = "answer"
        ind[key][:, nodes] = on[..., None] * torch.nn.functional.one_hot(target, V).float()  # (P, V^t, V)
    return dict(reward=reward, on_path=on_path, **ind)


def _expert(geom: TreeGeometry, st, s_exp, s_bad, wrong_answer):
    """The expert's leaf distributions (unnormalised 0/1) [P, L]: its strategy ``s_exp`` executed
    correctly, and its mistake: the failing strategy ``s_bad`` executed on-path, a wrong answer."""
    tok = geom.path_tokens
    s = tok[:, 0]
    good = ((s[None] == s_exp[:, None]) & st["on_path"] & (st["reward"] > 0)).float()
    bad = ((s[None] == s_bad[:, None]) & st["on_path"] & (tok[None, :, -1] == wrong_answer[:, None])).float()
    return good, bad


_DRAWS = ("works", "path", "answer", "wrong", "noise", "fork", "noise_b")  # one seed's random draws


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

    ``base_correct_mass`` (None: the fork as drawn) shifts the working strategies' logits at the
    root so that pi_base's mass on them is exactly that value, before pi_beta's noise is added;
    pi_base's J is then that mass times the mean chance of a correct execution and answer after a
    working strategy. Parameters are per prompt and SFT and RL use the same prompts, so this
    setting cannot measure generalisation to held-out prompts.
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
        base_correct_mass: float | None = None,
    ):
        cfg = builder_data_config(locals())
        if H < 3:
            raise ValueError(f"H must be >= 3 (strategy, execution, answer), got {H}")
        if not 1 <= num_good < V:
            raise ValueError(f"num_good must be in [1, V-1], got {num_good}")
        if V**H > 2_000_000:
            raise ValueError(f"V**H = {V**H} leaves is too many for exact enumeration")
        geom = TreeGeometry(V, H)
        prompts = torch.arange(num_prompts)
        cfg.update(sft_prompts=prompts, rl_prompts=prompts)
        P, N = num_prompts, geom.num_nodes
        gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        draws = []  # every seed's random draws, in its own generator's order; the rest is batched
        for gen in gens:
            works = torch.rand(P, V, generator=gen).argsort(-1) < num_good  # (P, V) strategies
            path = torch.randint(0, V, (P, V, H - 2), generator=gen)  # execution path per strategy
            answer = torch.randint(0, V, (P,), generator=gen)
            wrong_answer = (answer + torch.randint(1, V, (P,), generator=gen)) % V
            noise = torch.randn(P, N, V, generator=gen)  # off-path nodes: N(0, 1)
            fork = torch.randn(P, V, generator=gen)
            noise_b = torch.randn(P, N, V, generator=gen)  # pi_beta's logit noise
            draws.append(dict(zip(_DRAWS, (works, path, answer, wrong_answer, noise, fork, noise_b))))
        r = {k: v.flatten(0, 1) for k, v in stack_seeds(draws).items()}  # (S*P, ...): prompts of all seeds
        works, wrong_answer = r["works"], r["wrong"]
        st = _structure(geom, works, r["path"], r["answer"], wrong_answer)
        z = r["noise"]  # the stacked draws: no one else holds them
        z[:, 0] = fork_scale * r["fork"]
        # raise the right token at on-path nodes of every strategy
        z = z + exec_margin * st["exec"] + answer_margin * st["answer"]
        if base_correct_mass is not None:
            z[:, 0] = shift_to_mass(z[:, 0], works, base_correct_mass)
        zb = z + behavior_shift * r["noise_b"]
        ids = torch.arange(V)
        s_exp = torch.where(works, ids, V).amin(-1)  # the expert's strategy: first working one
        s_bad = torch.where(works, V, ids).amin(-1)  # its mistake: first failing one
        expert_good, expert_bad = _expert(geom, st, s_exp, s_bad, wrong_answer)
        S = len(gens)
        reward, z, zb, expert_good, expert_bad = (
            x.reshape(S, P, *x.shape[1:]) for x in (st["reward"], z, zb, expert_good, expert_bad)
        )
        super().__init__(
            "tree",
            geom,
            reward,
            z,
            zb,
            *demo_data(geom, reward, zb, expert_good, expert_bad, cfg, gens),
            prompts,
            prompts,
            data_source=data_source,
        )


def _draw_shared(geom: TreeGeometry, P: int, u, k: int, num_good: int, gen):
    """Features and ground truth of ``P`` prompts of ``SharedTree`` (working strategies by ``u``)."""
    V, H, N = geom.V, geom.H, geom.num_nodes
    r = torch.randn(P, N, V, k, generator=gen) / k**0.5
    works = (r[:, 0] @ u).argsort(-1).argsort(-1) >= V - num_good  # (P, V)
    path = torch.randint(0, V, (P, V, H - 2), generator=gen)
    answer = torch.randint(0, V, (P,), generator=gen)
    wrong = (answer + torch.randint(1, V, (P,), generator=gen)) % V
    st = _structure(geom, works, path, answer, wrong)
    phi = torch.cat([st["exec"][..., None], st["answer"][..., None], r], -1)  # (P, N, V, 2 + k)
    return phi, works, wrong, st


def _shared_instance(geom: TreeGeometry, drawn, theta0, v, noise, behavior_shift: float):
    """One prompt set's data tensors of ``SharedTree``: rewards, logits, expert good/bad paths."""
    phi, works, wrong, st = drawn
    z = phi @ theta0  # (P, N, V)
    s_exp = torch.where(works, phi[:, 0, :, 2:] @ v, -torch.inf).argmax(-1)
    s_bad = torch.where(works, -torch.inf, z[:, 0]).argmax(-1)
    good, bad = _expert(geom, st, s_exp, s_bad, wrong)
    data = dict(reward=st["reward"], base_logits=z, behavior_logits=z + behavior_shift * noise)
    return dict(data, features=phi, good=good, bad=bad)


class SharedTree(Scenario):
    """The reasoning tree with a log-linear policy shared across prompts: z[x, n, a] = theta . phi[x, n, a].

    phi = (1[a is the right execution token at n], 1[a is the answer the base believes at n],
    r[x, n, a]) with r ~ N(0, 1/k) in R^k at every node. The strategies that work on x are the
    ``num_good`` with the largest u . r[x, root, a] for a hidden direction u (as in ``SharedBandit``);
    execution paths and answers are per prompt as in ``ReasoningTree``. pi_base: theta0 =
    (``exec_margin``, ``answer_margin``, ``base_align`` u / sqrt(k) + ``base_noise`` N(0, I)); the
    expert uses the working strategy its style direction v prefers, its mistake is the failing
    strategy pi_base finds most plausible, executed on-path with a wrong answer. pi_beta: pi_base
    plus N(0, ``behavior_shift``^2) logit noise at every node (a per-prompt table, not log-linear).

    Prompts: SFT on the first ``sft_prompts``, RL on the rest of ``num_prompts``, and
    ``eval_prompts`` held-out prompts (from the seed's ``eval_generator``) that neither sees, whose
    metrics the pipeline reports as ``eval_*``: this setting CAN measure generalisation.
    ``base_correct_mass`` (None: as drawn) moves theta0 along u so that pi_base's fork mass on
    working strategies, averaged over the SFT and RL prompts, is exactly that value.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        num_prompts: int = 16,
        sft_prompts: int = 8,
        V: int = 5,
        H: int = 4,
        num_good: int = 2,
        k: int = 6,
        exec_margin: float = 3.0,
        answer_margin: float = 3.0,
        base_align: float = 1.0,
        base_noise: float = 1.0,
        behavior_shift: float = 1.0,
        wrong_demo_frac: float = 0.1,
        demos_per_prompt: int = 8,
        heldout_demos: int = 64,
        data_source: str = "expert",
        error_unit: str = "prompt",
        eval_prompts: int = 8,
        base_correct_mass: float | None = None,
    ):
        cfg = builder_data_config(locals())
        require(dict(H=H, k=k), at_least={"H": 3, "k": 1})
        if not 1 <= num_good < V:
            raise ValueError(f"num_good must be in [1, V-1], got {num_good}")
        if V**H > 2_000_000:
            raise ValueError(f"V**H = {V**H} leaves is too many for exact enumeration")
        geom = TreeGeometry(V, H)
        N = geom.num_nodes
        eval_idx, gens, ges = shared_prompts(cfg, seeds, num_prompts, sft_prompts, eval_prompts)
        per_seed, per_seed_eval = [], []
        for gen, ge in zip(gens, ges or [None] * len(gens)):
            u, v = hidden_directions(k, gen)
            theta0 = torch.cat(
                [
                    torch.tensor([exec_margin, answer_margin]),
                    base_align * u / k**0.5 + base_noise * torch.randn(k, generator=gen),
                ]
            )
            drawn = _draw_shared(geom, num_prompts, u, k, num_good, gen)
            if base_correct_mass is not None:
                phi, works = drawn[0], drawn[1]
                du = torch.cat([torch.zeros(2), u])
                theta0 = (
                    theta0
                    + mean_mass_shift(phi[:, 0] @ theta0, phi[:, 0] @ du, works, base_correct_mass) * du
                )
            noise = torch.randn(num_prompts, N, V, generator=gen)
            d = _shared_instance(geom, drawn, theta0, v, noise, behavior_shift)
            per_seed.append(dict(d, theta0=theta0))
            if eval_prompts:  # second generator: the training prompts' tensors are unchanged
                drawn_e = _draw_shared(geom, eval_prompts, u, k, num_good, ge)
                noise_e = torch.randn(eval_prompts, N, V, generator=ge)
                per_seed_eval.append(_shared_instance(geom, drawn_e, theta0, v, noise_e, behavior_shift))
        super().__init__(
            **shared_scenario(
                "tree_shared", geom, cfg, per_seed, per_seed_eval, gens, ges, eval_idx, data_source
            )
        )
