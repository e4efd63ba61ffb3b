"""The bandit environments (the prefix tree with H = 1): per-prompt softmax and a shared log-linear policy.

Ground truth and knobs as in ``toybench.tabular.envs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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

__all__ = ["MultiAnswerBandit", "SharedBandit"]


class MultiAnswerBandit(Scenario):
    """P prompts x V answers, ``num_correct`` correct answers per prompt, per-prompt parameters.

    pi_base: Gaussian logits (std ``base_scale``) shifted so that exactly ``base_correct_mass`` of
    the mass is on correct answers. Expert: one correct answer per prompt (chosen at random);
    its mistake is the most plausible wrong answer under pi_base. pi_beta: pi_base with extra
    Gaussian logit noise (std ``behavior_shift``). SFT and RL use the same prompts; the parameters
    are per prompt, so this setting cannot measure generalisation to held-out prompts.
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
        cfg = builder_data_config(locals())
        if not 1 <= num_correct < V:
            raise ValueError(f"num_correct must be in [1, V-1], got {num_correct}")
        if len(seeds) < 1:
            raise ValueError("seeds must be a non-empty sequence of ints")
        geom = TreeGeometry(V, 1)
        prompts = torch.arange(num_prompts)
        cfg.update(sft_prompts=prompts, rl_prompts=prompts)
        P = num_prompts
        gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        draws = []  # every seed's random draws, in its own generator's order; the rest is batched
        for gen in gens:
            good = torch.rand(P, V, generator=gen).argsort(-1) < num_correct  # (P, V)
            noise, noise_b = torch.randn(P, V, generator=gen), torch.randn(P, V, generator=gen)
            y_star = torch.multinomial(good.float(), 1, generator=gen)[:, 0]
            draws.append(dict(good=good, noise=noise, noise_b=noise_b, y_star=y_star))
        r = stack_seeds(draws)  # (S, P, ...)
        good = r["good"]
        z = shift_to_mass(base_scale * r["noise"], good, base_correct_mass)  # (S, P, V)
        zb = z + behavior_shift * r["noise_b"]
        w = torch.where(good, -torch.inf, z).argmax(-1)
        eye = torch.eye(V)
        reward, zb = good.float(), zb[:, :, None]
        super().__init__(
            "bandit",
            geom,
            reward,
            z[:, :, None],
            zb,
            *demo_data(geom, reward, zb, eye[r["y_star"]], eye[w], cfg, gens),
            prompts,
            prompts,
            data_source=data_source,
        )


class SharedBandit(Scenario):
    """Log-linear bandit: logits(x, y) = theta . phi(x, y), theta in R^d shared by all prompts.

    phi ~ N(0, 1/d) per (prompt, answer); a hidden direction u decides correctness (the
    ``num_correct`` answers with the largest u . phi); the expert picks, among the correct
    answers, the one its own style direction v prefers; pi_base has theta0 = ``base_align`` u +
    noise. SFT prompts (first ``sft_prompts``) and RL prompts (the rest) are disjoint, so SFT
    moves the policy on RL prompts only through the shared theta.

    Generalisation: ``eval_prompts`` more prompts (indices ``num_prompts ..``, drawn from the
    seed's ``eval_generator`` with the same u, v and theta0) are used by neither SFT nor RL; the
    pipeline reports its metrics on them as ``eval_*`` columns. ``base_correct_mass`` (None: the
    base as drawn) moves theta0 along u, theta0 + c u, with c found by bisection so that pi_base's
    mass on correct answers averaged over the SFT and RL prompts is exactly that value (the mass is
    increasing in c because the correct answers are those with the largest u . phi).
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
        eval_prompts: int = 16,
        base_correct_mass: float | None = None,
    ):
        cfg = builder_data_config(locals())
        if not 1 <= num_correct < V:
            raise ValueError(f"num_correct must be in [1, V-1], got {num_correct}")
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        geom = TreeGeometry(V, 1)

        def answers(phi, u, v, theta0, zb_noise):  # correctness, expert answer, mistake on prompts phi
            good = (phi @ u).argsort(-1).argsort(-1) >= V - num_correct  # (P, V)
            z = phi @ theta0  # (P, V)
            zb = z + behavior_shift * zb_noise
            y_star = torch.where(good, phi @ v, -torch.inf).argmax(-1)
            w = torch.where(good, -torch.inf, z).argmax(-1)
            return dict(reward=good.float(), base_logits=z[:, None], behavior_logits=zb[:, None]), y_star, w

        eval_idx, gens, ges = shared_prompts(cfg, seeds, num_prompts, sft_prompts, eval_prompts)
        eye = torch.eye(V)
        per_seed, per_seed_eval = [], []
        for gen, ge in zip(gens, ges or [None] * len(gens)):
            P = num_prompts
            phi = torch.randn(P, V, d, generator=gen) / d**0.5  # (P, V, d)
            u, v = hidden_directions(d, gen)
            theta0 = base_align * u / d**0.5 + base_noise * torch.randn(d, generator=gen)
            if base_correct_mass is not None:
                good = (phi @ u).argsort(-1).argsort(-1) >= V - num_correct
                theta0 = theta0 + mean_mass_shift(phi @ theta0, phi @ u, good, base_correct_mass) * u
            d_, y_star, w = answers(phi, u, v, theta0, torch.randn(P, V, generator=gen))
            d_.update(features=phi[:, None], theta0=theta0, good=eye[y_star], bad=eye[w])
            per_seed.append(d_)
            if eval_prompts:  # second generator: the training prompts' tensors are unchanged
                phi_e = torch.randn(eval_prompts, V, d, generator=ge) / d**0.5
                e, ye, we = answers(phi_e, u, v, theta0, torch.randn(eval_prompts, V, generator=ge))
                per_seed_eval.append(dict(e, features=phi_e[:, None], good=eye[ye], bad=eye[we]))
        super().__init__(
            **shared_scenario(
                "bandit_shared", geom, cfg, per_seed, per_seed_eval, gens, ges, eval_idx, data_source
            )
        )
