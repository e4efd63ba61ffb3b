"""The tabular GRPO update against an independent hand computation (numpy, theory.mdp's tree indexing).

One call of ``pipeline._grpo_update`` on a tiny scenario is recomputed from scratch: the same sampled
leaves (recorded from the rollout streams), group advantages (r - mean) / (std + eps), per-token
ratios against the log-probs of the FIRST pass (fixed across all ``num_iterations`` passes), the
asymmetric clip, the k3 penalty to the RL start, the seed-batch normaliser of each ``loss_type`` (a
seed's batch is its P_rl * G sequences; per-prompt parameters get P_rl times it, i.e. each prompt's own
mean) and the softmax Jacobian. No toybench loss, reduction or advantage code is used by the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory import mdp
from toybench.tabular import ReasoningTree, SharedBandit
from toybench.tabular.pipeline import PipelineConfig, _grpo_update, run_method
from toybench.tabular.policies import make_policy
from toybench.tabular.rollouts import RolloutStreams

F64 = torch.float64


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _hand_grpo(z_of, jac, params0, ref_z, reward, leaves, cfg, tabular, V, H):
    """Numpy GRPO update. z_of(params) -> node logits (S, P, N, V); jac(gz) -> d loss / d params.

    Returns the new params and, per pass, the ratios, advantages and clipped flags (for the test's
    own checks that the case really exercises the clip).
    """
    nodes, tokens = mdp.all_path_nodes(V, H), mdp.all_sequences(V, H)  # (L, H) each
    S, P, G = leaves.shape
    r = np.take_along_axis(reward, leaves, 2)  # (S, P, G)
    centred = r - r.mean(-1, keepdims=True)
    if cfg.adv_scale == "group":
        adv = centred / (r.std(-1, ddof=1, keepdims=True) + 1e-6)
    elif cfg.adv_scale == "none":
        adv = centred
    else:  # batch: the unbiased std of the seed's own batch (its P * G rewards), never across seeds
        adv = centred / (r.reshape(S, -1).std(-1, ddof=1)[:, None, None] + 1e-6)
    # per-token weight of the seed-batch reduction (full masks: every sequence has H tokens)
    w = {"grpo": 1 / (P * G * H), "bnpo": 1 / (P * G * H), "dapo": 1 / (P * G * H)}
    w |= {"dr_grpo": 1 / (P * G * H), "sum": 1.0}
    w = w[cfg.loss_type] * (P if tabular else 1.0)
    ref_logp = np.log(_softmax(ref_z))
    params, old, trace = params0.copy(), None, []
    for _ in range(cfg.num_iterations):
        z = z_of(params)
        pi = _softmax(z)
        logpi = np.log(pi)
        gz = np.zeros_like(z)
        logp = np.zeros((S, P, G, H))
        for s in range(S):
            for p in range(P):
                for g in range(G):
                    for t in range(H):
                        n, a = nodes[leaves[s, p, g], t], tokens[leaves[s, p, g], t]
                        logp[s, p, g, t] = logpi[s, p, n, a]
        if old is None:
            old = logp.copy()
        ratio = np.exp(logp - old)
        A = adv[..., None]
        clipped = ((ratio > 1 + cfg.epsilon_high) & (A > 0)) | ((ratio < 1 - cfg.epsilon) & (A < 0))
        dl = np.where(clipped, 0.0, -A * ratio)  # d loss_t / d logp_t
        if cfg.kl_coef > 0:  # k3 = e^d - d - 1, d = ref - logp: d k3 / d logp = 1 - e^d
            ref = np.zeros_like(logp)
            for s, p, g, t in np.ndindex(S, P, G, H):
                n, a = nodes[leaves[s, p, g], t], tokens[leaves[s, p, g], t]
                ref[s, p, g, t] = ref_logp[s, p, n, a]
            dl = dl + cfg.kl_coef * (1 - np.exp(ref - logp))
        for s, p, g, t in np.ndindex(S, P, G, H):
            n, a = nodes[leaves[s, p, g], t], tokens[leaves[s, p, g], t]
            onehot = np.eye(V)[a]
            gz[s, p, n] += w * dl[s, p, g, t] * (onehot - pi[s, p, n])
        params = params - cfg.rl_lr * jac(gz)
        trace.append((ratio, np.broadcast_to(A, ratio.shape), clipped))
    return params, trace


def _record_samples(monkeypatch):
    seen = []
    real = RolloutStreams.sample_leaves

    def recording(self, *args, **kw):
        out = real(self, *args, **kw)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(RolloutStreams, "sample_leaves", recording)
    return seen


def _streams(seed, sc):
    return RolloutStreams(seed, torch.arange(sc.num_seeds))


def _tree(seeds=(0, 1)):
    sc = ReasoningTree(list(seeds), num_prompts=2, V=3, H=3)
    # graded rewards (not 0/1) so every group has non-zero advantages
    g = torch.Generator().manual_seed(7)
    sc.reward = torch.rand(sc.reward.shape, generator=g, dtype=F64)
    sc.base_logits = sc.base_logits.double()
    return sc


def _shared():
    sc = SharedBandit([0, 1], num_prompts=8, sft_prompts=4, V=6, d=3)
    g = torch.Generator().manual_seed(8)
    sc.reward = torch.rand(sc.reward.shape, generator=g, dtype=F64)
    sc.features, sc.theta0 = sc.features.double(), sc.theta0.double()
    sc.base_logits = sc.base_logits.double()
    return sc


def _run_both(monkeypatch, sc, cfg, start, ref):
    """The pipeline's update and the hand one from ``start`` (params) with RL start ``ref`` (params)."""
    pol = make_policy(sc)
    seen = _record_samples(monkeypatch)
    gen = _streams(cfg.grpo_seed, sc)
    got = _grpo_update(sc, pol, start.clone(), ref.clone(), cfg, gen).numpy()
    (leaves,) = seen
    rl = sc.rl_prompts.numpy()
    S, P = sc.num_seeds, len(rl)
    leaves = leaves.reshape(S, P, cfg.num_generations).numpy()
    reward = sc.reward[:, rl].numpy()
    g = sc.geometry
    if sc.features is None:
        z_of, tabular = (lambda x: x[:, rl]), True

        def jac(gz):
            out = np.zeros(tuple(start.shape))
            out[:, rl] = gz
            return out
    else:
        phi = sc.features[:, rl].numpy()  # (S, P, N, V, d)
        z_of, tabular = (lambda th: np.einsum("spnvd,sd->spnv", phi, th)), False

        def jac(gz):
            return np.einsum("spnvd,spnv->sd", phi, gz)

    ref_z = pol.node_logits(ref)[:, rl].numpy()
    want, trace = _hand_grpo(z_of, jac, start.numpy(), ref_z, reward, leaves, cfg, tabular, g.V, g.H)
    return got, want, trace


def _moved_start(sc, scale=1.5, seed=3):
    """A start away from the RL start, so the k3 term has a gradient."""
    pol = make_policy(sc)
    p0 = pol.init()
    g = torch.Generator().manual_seed(seed)
    return p0 + scale * torch.randn(p0.shape, generator=g, dtype=F64), p0


CLIP = PipelineConfig(
    rl_algorithm="grpo", num_generations=4, num_iterations=3, rl_lr=6.0, epsilon=0.2, epsilon_high=0.28
)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "sum"])
def test_tabular_grpo_update_matches_hand_computation(monkeypatch, loss_type):
    sc = _tree()
    cfg = PipelineConfig(**{**CLIP.__dict__, "loss_type": loss_type})
    if loss_type == "sum":  # the sum is P * G * H times larger: keep the ratios in the clip's range
        cfg.rl_lr = CLIP.rl_lr / (2 * 4 * 3)
    start = make_policy(sc).init()
    got, want, trace = _run_both(monkeypatch, sc, cfg, start, start)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # the case exercises what it claims: pass 1 has ratio 1 everywhere, later passes clip
    ratio0, _, clipped0 = trace[0]
    np.testing.assert_allclose(ratio0, 1.0)
    assert not clipped0.any()
    assert any(c.any() for _, _, c in trace[1:]), "no ratio left the clip range: the test is too weak"
    assert np.abs(got - start.numpy()).max() > 0.1


def test_grpo_clip_is_asymmetric_and_binds(monkeypatch):
    """eps_low != eps_high matters: some ratio sits in (1 + eps_low, 1 + eps_high] with A > 0 or in
    [1 - eps_high, 1 - eps_low) with A < 0, where swapping the two ranges changes the clip."""
    sc = _tree()
    start = make_policy(sc).init()
    clip = PipelineConfig(**{**CLIP.__dict__, "grpo_seed": 3})  # a draw with a ratio in the upper band
    got, want, trace = _run_both(monkeypatch, sc, clip, start, start)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    band = [
        ((r > 1.2) & (r <= 1.28) & (A > 0)) | ((r < 0.8) & (r >= 0.72) & (A < 0)) for r, A, _ in trace[1:]
    ]
    assert any(b.any() for b in band), "no ratio in the asymmetric band: the test cannot see a swap"
    # and a symmetric clip gives a different update (the band above is what differs)
    sym = PipelineConfig(**{**clip.__dict__, "epsilon_high": 0.2})
    got_sym, want_sym, _ = _run_both(monkeypatch, sc, sym, start, start)
    np.testing.assert_allclose(got_sym, want_sym, rtol=1e-10, atol=1e-10)
    assert np.abs(got_sym - got).max() > 1e-6


def test_grpo_old_logp_fixed_across_passes(monkeypatch):
    """With old log-probs refreshed every pass the ratio would stay 1 and nothing would clip: the
    update would be num_iterations plain policy-gradient steps. It is not."""
    sc = _tree()
    start = make_policy(sc).init()
    got, _, trace = _run_both(monkeypatch, sc, CLIP, start, start)
    assert not np.allclose(trace[2][0], 1.0)
    # hand: plain PG steps == clipping switched off (eps huge) with ratios kept at 1 => compare
    # against the pipeline run with an unreachable clip range, which is NOT the clipped update
    wide = PipelineConfig(**{**CLIP.__dict__, "epsilon": 0.99, "epsilon_high": 1e9})
    got_wide, want_wide, _ = _run_both(monkeypatch, sc, wide, start, start)
    np.testing.assert_allclose(got_wide, want_wide, rtol=1e-10, atol=1e-10)
    assert np.abs(got_wide - got).max() > 1e-6


@pytest.mark.parametrize("adv_scale", ["batch", "none"])
def test_grpo_update_with_kl_and_other_advantage_scales(monkeypatch, adv_scale):
    sc = _tree()
    cfg = PipelineConfig(**{**CLIP.__dict__, "kl_coef": 0.5, "adv_scale": adv_scale})
    start, ref = _moved_start(sc)
    got, want, _ = _run_both(monkeypatch, sc, cfg, start, ref)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # the KL term matters in this case
    no_kl = PipelineConfig(**{**cfg.__dict__, "kl_coef": 0.0})
    got0, _, _ = _run_both(monkeypatch, sc, no_kl, start, ref)
    assert np.abs(got0 - got).max() > 1e-3


@pytest.mark.parametrize("loss_type", ["grpo", "sum"])
def test_shared_grpo_update_matches_hand_computation(monkeypatch, loss_type):
    """Log-linear (shared) parameters: a seed's loss is its batch's reduction (no factor P_rl)."""
    sc = _shared()
    cfg = PipelineConfig(**{**CLIP.__dict__, "loss_type": loss_type, "kl_coef": 0.3})
    if loss_type == "sum":
        cfg.rl_lr = CLIP.rl_lr / (4 * 4)
    start, ref = _moved_start(sc, scale=0.5)
    got, want, trace = _run_both(monkeypatch, sc, cfg, start, ref)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert np.abs(got - start.numpy()).max() > 0.05


def test_tabular_prompt_update_is_independent_of_the_other_prompts(monkeypatch):
    """Per-prompt parameters get each prompt's own mean gradient: the oracle run on prompt 0 ALONE
    (P = 1, the same samples) gives the pipeline's prompt-0 update (the P_rl factor undoes the mean)."""
    sc = _tree(seeds=(0,))
    start = make_policy(sc).init()
    seen = _record_samples(monkeypatch)
    gen = _streams(CLIP.grpo_seed, sc)
    got = _grpo_update(sc, make_policy(sc), start.clone(), start.clone(), CLIP, gen).numpy()
    leaves = seen[0].reshape(1, 2, CLIP.num_generations).numpy()[:, :1]
    alone = start.numpy()[:, :1]
    g = sc.geometry
    one, _ = _hand_grpo(
        lambda x: x, lambda gz: gz, alone, alone, sc.reward.numpy()[:, :1], leaves, CLIP, True, g.V, g.H
    )
    np.testing.assert_allclose(got[:, :1], one, rtol=1e-10, atol=1e-10)
    assert np.abs(one - alone).max() > 0.1


def test_grpo_per_seed_step_sizes_equal_separate_runs():
    """``lr`` (an [S] tensor, run_method's ``rl_lrs``): each seed steps with its own size, as if run alone
    at that ``rl_lr`` (the same samples: the sampling happens before any step)."""
    sc = _tree()
    start = make_policy(sc).init()
    got = _grpo_update(
        sc, make_policy(sc), start.clone(), start.clone(), CLIP, _streams(0, sc),
        torch.tensor([6.0, 2.0]),
    )  # fmt: skip
    for s, lr in enumerate((6.0, 2.0)):
        cfg = PipelineConfig(**{**CLIP.__dict__, "rl_lr": lr})
        one = _grpo_update(sc, make_policy(sc), start.clone(), start.clone(), cfg, _streams(0, sc))
        torch.testing.assert_close(got[s], one[s], rtol=1e-12, atol=1e-12)
    assert (got[1] - got[0]).abs().max() > 1e-3
    # through run_method: rl_lrs reaches the GRPO update
    run = dict(sft_steps=0, rl_steps=2, rl_algorithm="grpo", num_generations=4, rl_lr=6.0)
    a = run_method(sc, "none", PipelineConfig(**run), rl_lrs=torch.tensor([6.0, 0.5]))
    b = run_method(sc, "none", PipelineConfig(**run))
    last = lambda df, s: df[(df.stage == "rl") & (df.step == 2) & (df.seed == s)]["J"].item()  # noqa: E731
    assert last(a, 0) == pytest.approx(last(b, 0), rel=1e-12) and abs(last(a, 1) - last(b, 1)) > 1e-4
