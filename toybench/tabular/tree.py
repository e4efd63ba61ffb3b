"""The reasoning-tree token MDP: a strategy fork, near-deterministic execution tokens, a verified answer.

Ground truth and knobs as in ``toybench.tabular.envs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from toybench.config import require
from toybench.tabular.envs import Scenario, TreeGeometry, data_config, demo_data, shift_to_mass, stack_seeds

__all__ = ["ReasoningTree"]


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
        cfg = data_config(
            num_prompts, wrong_demo_frac, demos_per_prompt, heldout_demos, data_source, error_unit
        )
        if H < 3:
            raise ValueError(f"H must be >= 3 (strategy, execution, answer), got {H}")
        if not 1 <= num_good < V:
            raise ValueError(f"num_good must be in [1, V-1], got {num_good}")
        if base_correct_mass is not None:
            require({"base_correct_mass": base_correct_mass}, within={"base_correct_mass": (1e-6, 1 - 1e-6)})
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
            if base_correct_mass is not None:
                z[:, 0] = shift_to_mass(z[:, 0], works, base_correct_mass)
            zb = z + behavior_shift * torch.randn(P, geom.num_nodes, V, generator=gen)
            ids = torch.arange(V)
            s_exp = torch.where(works, ids, V).amin(-1)  # the expert's strategy: first working one
            s_bad = torch.where(works, V, ids).amin(-1)  # its mistake: first failing one
            expert_good = ((s[None] == s_exp[:, None]) & on_path & (reward > 0)).float()
            expert_bad = (
                (s[None] == s_bad[:, None]) & on_path & (tok[None, :, -1] == wrong_answer[:, None])
            ).float()
            d = dict(reward=reward, base_logits=z, behavior_logits=zb)
            d["demo_leaves"], d["demo_behavior_logp"], d["heldout"] = demo_data(
                geom, reward, z, zb, expert_good, expert_bad, cfg, gen
            )
            per_seed.append(d)
        self.__dict__.update(
            vars(stack_seeds("tree", geom, per_seed, prompts, prompts, data_source=data_source))
        )
