"""GRPO checked against independent computations.

1. Loss and gradient of each ``loss_type`` on a fixed tiny batch == a hand computation in plain
   Python (``math``, scalar loops), no toybench code involved.
2. Parity with TRL 1.16's ``GRPOTrainer._compute_loss`` on the same per-token log-probs
   (skipped when trl is absent).
3. One step of the real loop on the tiny model: the gradient the optimizer receives == the gradient
   of an independent, unbatched, full-logits implementation (tempered log-probs, hand advantages,
   TRL's per-token loss and normaliser), also on the second pass of ``num_iterations=2``.
4. A micro-batched step == the full-batch step (gradients and parameters), for each ``loss_type``.
5. Sampling depends on the step.
"""

from __future__ import annotations

import copy
import json
import math
import types
from collections import defaultdict

import pytest
import torch

import llm.grpo as grpo_mod
from llm.grpo import rollout_batch, sequence_advantages
from llm.loading import load_model
from llm.rollout import Rollout
from llm.train import Normaliser
from toybench.objectives import Counts, grpo_per_token, normalise

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
EPS, EPS_HIGH, KL_COEF, L_MAX = 0.2, 0.28, 0.1, 7

# B = 4 sequences, T = 5 positions (B != T, so a wrongly broadcast advantage cannot line up).
LOGP = [
    [-1.0, -0.5, -2.0, -0.1, -3.0],
    [-0.2, -1.5, -0.7, -0.4, -0.9],
    [-2.2, -0.3, -1.1, -0.6, -0.8],
    [-0.9, -0.9, -0.9, -0.9, -0.9],
]
# old log-probs: ratios exp(logp - old) from ~0.5 to ~1.6 (both clip sides hit for both signs of A)
OLD = [
    [-1.1, -0.1, -2.0, -0.6, -2.5],
    [-0.2, -1.0, -1.2, -0.4, -0.1],
    [-2.0, -0.8, -1.1, -0.2, -1.3],
    [-0.9, -0.9, -0.9, -0.9, -0.9],
]
REF = [
    [-0.8, -0.6, -1.5, -0.3, -2.0],
    [-0.5, -1.2, -0.9, -0.1, -1.0],
    [-1.9, -0.7, -1.0, -0.4, -1.2],
    [-1.0, -1.0, -1.0, -1.0, -1.0],
]
MASK = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]  # row 3: a masked-out completion
ADV = [1.0, -0.5, 2.0, 0.3]


def hand_loss_and_grad(loss_type: str, with_old: bool, with_kl: bool):
    """TRL's GRPO loss and d loss / d logp by hand (scalar Python)."""
    B, T = len(LOGP), len(LOGP[0])
    per = [[0.0] * T for _ in range(B)]
    dper = [[0.0] * T for _ in range(B)]
    for i in range(B):
        for t in range(T):
            lp, a = LOGP[i][t], ADV[i]
            old = OLD[i][t] if with_old else lp
            r = math.exp(lp - old)
            rc = min(max(r, 1 - EPS), 1 + EPS_HIGH)
            unclipped, clipped = r * a, rc * a
            if unclipped <= clipped:  # -min(.) takes the unclipped branch: d(-r a)/dlp = -r a
                per[i][t], dper[i][t] = -unclipped, -r * a
            else:  # clipped branch: constant in lp
                per[i][t], dper[i][t] = -clipped, 0.0
            if with_kl:
                d = REF[i][t] - lp
                per[i][t] += KL_COEF * (math.exp(d) - d - 1)
                dper[i][t] += KL_COEF * (-math.exp(d) + 1)
    n_tok = [sum(row) for row in MASK]
    if loss_type == "grpo":
        w = [[MASK[i][t] / max(n_tok[i], 1) / B for t in range(T)] for i in range(B)]
    elif loss_type in ("bnpo", "dapo"):
        w = [[MASK[i][t] / max(sum(n_tok), 1) for t in range(T)] for i in range(B)]
    else:  # dr_grpo
        w = [[MASK[i][t] / (B * L_MAX) for t in range(T)] for i in range(B)]
    loss = sum(w[i][t] * per[i][t] for i in range(B) for t in range(T))
    grad = [[w[i][t] * dper[i][t] for t in range(T)] for i in range(B)]
    return loss, grad


def ours(loss_type: str, with_old: bool, with_kl: bool):
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(MASK, dtype=torch.float64)
    per = grpo_per_token(
        logp,
        torch.tensor(OLD, dtype=torch.float64) if with_old else None,
        torch.tensor(REF, dtype=torch.float64) if with_kl else None,
        torch.tensor(ADV, dtype=torch.float64),
        epsilon=EPS,
        epsilon_high=EPS_HIGH,
        kl_coef=KL_COEF if with_kl else 0.0,
    )
    norm = Normaliser.of([mask])
    loss = normalise(per, mask, loss_type, Counts(norm.rows, norm.tokens, L_MAX))
    loss.backward()
    return loss.detach(), logp.grad


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize(
    ("with_old", "with_kl"), [(False, False), (True, False), (True, True), (False, True)]
)
def test_loss_and_gradient_equal_hand_computation(loss_type, with_old, with_kl):
    want_loss, want_grad = hand_loss_and_grad(loss_type, with_old, with_kl)
    loss, grad = ours(loss_type, with_old, with_kl)
    assert abs(loss.item() - want_loss) < 1e-12
    torch.testing.assert_close(grad, torch.tensor(want_grad, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert any(abs(g) > 1e-3 for row in want_grad for g in row)  # the case is not degenerate


def test_hand_batch_hits_both_clip_sides():
    """The fixed batch exercises the clipped branch for A > 0 and A < 0 (else the oracle is weak)."""
    hit = set()
    for i in range(len(LOGP)):
        for t in range(len(LOGP[0])):
            r = math.exp(LOGP[i][t] - OLD[i][t])
            if MASK[i][t] and r > 1 + EPS_HIGH and ADV[i] > 0:
                hit.add("high")
            if MASK[i][t] and r < 1 - EPS and ADV[i] < 0:
                hit.add("low")
    assert hit == {"high", "low"}


# ----------------------------------------------------------------------------- TRL parity
def _trl_loss(loss_type: str, with_old: bool, with_kl: bool):
    """TRL 1.16's ``GRPOTrainer._compute_loss`` on our per-token log-probs (model forward stubbed)."""
    trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    B, T = logp.shape

    class Acc:
        num_processes = 1
        sync_gradients = True

        @staticmethod
        def gather(x):
            return x

        gather_for_metrics = gather

        @staticmethod
        def reduce(x, reduction="sum"):
            return x

    fake = types.SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=KL_COEF if with_kl else 0.0,
        loss_type=loss_type,
        epsilon_low=EPS,
        epsilon_high=EPS_HIGH,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=L_MAX,
        accelerator=Acc(),
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
    )
    mask = torch.tensor(MASK, dtype=torch.long)
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": torch.tensor(ADV, dtype=torch.float64),
        "num_items_in_batch": mask.sum(),
    }
    if with_old:
        inputs["old_per_token_logps"] = torch.tensor(OLD, dtype=torch.float64)
    if with_kl:
        inputs["ref_per_token_logps"] = torch.tensor(REF, dtype=torch.float64)
    loss = trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)
    loss.backward()
    return loss, logp.grad, fake._metrics["train"]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize(("with_old", "with_kl"), [(False, False), (True, True)])
def test_parity_with_trl_compute_loss(loss_type, with_old, with_kl):
    trl_loss, trl_grad, metrics = _trl_loss(loss_type, with_old, with_kl)
    loss, grad = ours(loss_type, with_old, with_kl)
    torch.testing.assert_close(loss, trl_loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, trl_grad, rtol=1e-12, atol=1e-14)
    if with_old:  # TRL's clip metrics == ours (grpo.clip_stats over the same mask)
        old = torch.tensor(OLD, dtype=torch.float64)
        m = torch.tensor(MASK, dtype=torch.float64)
        s = grpo_mod.clip_stats(
            torch.tensor(LOGP, dtype=torch.float64), old, torch.tensor(ADV), m, EPS, EPS_HIGH
        )
        for v, name in zip(s / m.sum(), ("low_mean", "high_mean", "region_mean")):
            assert float(v) == pytest.approx(metrics[f"clip_ratio/{name}"][0], abs=1e-12)


# ----------------------------------------------------------------------------- batch assembly
def test_advantages_follow_their_sequences():
    """Sequence p * G + g carries the advantage of sample g of prompt p (hand-computed)."""
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    adv = sequence_advantages(rewards, "group", rank=0, per_rank=2)
    want = []
    for row in rewards.tolist():
        mu = sum(row) / len(row)
        sd = math.sqrt(sum((x - mu) ** 2 for x in row) / (len(row) - 1))
        want += [(x - mu) / (sd + 1e-6) for x in row]
    torch.testing.assert_close(adv, torch.tensor(want), rtol=1e-6, atol=1e-6)
    # rank 1 of 2 (one prompt each) gets the second prompt's group
    torch.testing.assert_close(
        sequence_advantages(rewards, "group", rank=1, per_rank=1), torch.tensor(want[3:])
    )
    groups = [[Rollout((5,), (10 * p + g,), str(g), truncated=g == 1) for g in range(3)] for p in range(2)]
    batch = rollout_batch(groups, pad_id=0, mask_truncated=True)
    assert batch["input_ids"][:, 1].tolist() == [0, 1, 2, 10, 11, 12]
    assert batch["loss_mask"][:, 0].tolist() == [1, 0, 1, 1, 0, 1]  # truncated ones masked


# ----------------------------------------------------------------------------- the real loop
def _text_reward(examples, groups, *_):
    """A reward with spread on the untrained tiny model: the response length mod 3."""
    return torch.tensor([[float(len(r.response_ids) % 3) for r in g] for g in groups])


def _capture(monkeypatch):
    """Record (parameters before the step, gradients it receives) at every optimizer step, and
    every generated batch."""
    calls, gens = [], []
    real_step, real_gen = grpo_mod.optimizer_step, grpo_mod.generate

    def step(model, *a, **k):
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        calls.append((params, grads))
        return real_step(model, *a, **k)

    def gen(*a, **k):
        out = real_gen(*a, **k)
        gens.append(out)
        return out

    monkeypatch.setattr(grpo_mod, "optimizer_step", step)
    monkeypatch.setattr(grpo_mod, "generate", gen)
    return calls, gens


ORACLE = dict(n_train=4, kl_coef=0.3, lr=1e-3)  # the loop runs of this file, over conftest's defaults


def _grpo(run_tiny, name, **kw):
    return run_tiny("grpo", name, **(ORACLE | kw))[0]


def _independent_grad(model_params, old_params, base, groups, cfg: dict):
    """The GRPO gradient by an independent route: one sequence at a time, full logits / T."""
    model = copy.deepcopy(base)
    model.load_state_dict(model_params, strict=False)  # tied lm_head
    old = copy.deepcopy(base)
    old.load_state_dict(old_params, strict=False)
    T, G, lt = cfg["temperature"], len(groups[0]), cfg["loss_type"]
    flat = [r for g in groups for r in g]
    rewards = [[float(len(r.response_ids) % 3) for r in g] for g in groups]
    adv = []
    for row in rewards:
        mu = sum(row) / G
        sd = math.sqrt(sum((x - mu) ** 2 for x in row) / (G - 1))
        adv += [(x - mu) / (sd + 1e-6) for x in row]

    def logps(m, r):
        ids = torch.tensor([list(r.prompt_ids) + list(r.response_ids)])
        logits = m(input_ids=ids).logits[0, len(r.prompt_ids) - 1 : -1] / T  # predicts the response
        return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(r.response_ids)[:, None])[:, 0]

    n_tok = sum(
        len(r.response_ids) for r in flat if not (cfg.get("mask_truncated_completions") and r.truncated)
    )
    total = 0.0
    for i, r in enumerate(flat):
        if cfg.get("mask_truncated_completions") and r.truncated:
            continue
        lp = logps(model, r)
        with torch.no_grad():
            lp_old, lp_ref = logps(old, r), logps(base, r)
        ratio = torch.exp(lp - lp_old)
        surr = -torch.min(ratio * adv[i], ratio.clamp(1 - 0.2, 1 + 0.28) * adv[i])
        d = lp_ref - lp
        per = surr + cfg["kl_coef"] * (torch.exp(d) - d - 1)
        if lt == "grpo":
            total = total + per.sum() / len(lp) / len(flat)
        elif lt in ("bnpo", "dapo"):
            total = total + per.sum() / n_tok
        else:  # dr_grpo
            total = total + per.sum() / (len(flat) * cfg["max_completion_length"])
    total.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss_type="grpo"),
        dict(loss_type="dr_grpo", mask_truncated_completions=True),
        dict(loss_type="dapo", num_iterations=2),
    ],
    ids=["grpo", "dr_grpo-masked", "dapo-2-iterations"],
)
def test_loop_gradient_equals_independent_computation(tiny_dir, run_tiny, monkeypatch, kw):
    monkeypatch.setattr(grpo_mod, "group_rewards", _text_reward)
    calls, gens = _capture(monkeypatch)
    _grpo(run_tiny, "g", **kw)
    base = load_model(str(tiny_dir), "cpu")
    cfg = dict(temperature=1.5, kl_coef=0.3, max_completion_length=6, loss_type="dapo") | kw
    (groups,) = gens
    assert len(calls) == kw.get("num_iterations", 1)
    flat_rewards = [float(len(r.response_ids) % 3) for g in groups for r in g]
    assert len(set(flat_rewards)) > 1  # advantages are not all zero
    for params, grads in calls:  # pass k: current = params before step k, old = before the first
        want = _independent_grad(params, calls[0][0], base, groups, cfg)
        assert want.keys() == grads.keys()
        for n in want:
            torch.testing.assert_close(grads[n], want[n], rtol=1e-4, atol=1e-6, msg=n)
    if kw.get("num_iterations", 1) > 1:  # the second pass is off-policy: old log-probs matter
        assert any(not torch.equal(calls[1][0][n], calls[0][0][n]) for n in calls[0][0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batched_step_equals_full_batch(tiny_dir, run_tiny, monkeypatch, loss_type):
    monkeypatch.setattr(grpo_mod, "group_rewards", _text_reward)
    calls, _ = _capture(monkeypatch)
    kw = dict(loss_type=loss_type, mask_truncated_completions=True, prompts_per_step=4, num_generations=2)
    full = _grpo(run_tiny, "full", micro_batch_size=64, **kw)
    micro = _grpo(run_tiny, "micro", micro_batch_size=3, **kw)
    (_, g_full), (_, g_micro) = calls
    for n in g_full:
        torch.testing.assert_close(g_micro[n], g_full[n], rtol=1e-5, atol=1e-7, msg=n)
    base = load_model(str(tiny_dir), "cpu")
    p_full, p_micro = dict(full.named_parameters()), dict(micro.named_parameters())
    assert any(not torch.equal(p_full[n], p) for n, p in base.named_parameters())
    # atol 1% of the step (lr 1e-3): AdamW's first step is lr * g / (|g| + 1e-8), so the rare element
    # with |g| ~ 1e-8 turns gradient rounding (1e-9) into ~1e-6 of parameter (seen: 1 of 24,576)
    for n in p_full:
        torch.testing.assert_close(p_micro[n], p_full[n], rtol=1e-5, atol=1e-5, msg=n)


def test_auto_micro_batch_step_equals_fixed(tiny_dir, run_tiny, monkeypatch):
    """``micro_batch_size = 0`` (auto) with a free-memory figure that fits the whole batch in one
    pass (the GPU case) gives the fixed-size step's gradients and weights; without a figure (CPU) it
    takes the fixed fallback."""
    import llm.train as train_mod

    monkeypatch.setattr(grpo_mod, "group_rewards", _text_reward)
    calls, _ = _capture(monkeypatch)
    sizes = []
    real_mb = grpo_mod.micro_batches
    monkeypatch.setattr(grpo_mod, "micro_batches", lambda b, n, d: sizes.append(n) or real_mb(b, n, d))
    kw = dict(mask_truncated_completions=True, prompts_per_step=4, num_generations=2)
    fixed = _grpo(run_tiny, "fixed", micro_batch_size=3, **kw)
    monkeypatch.setattr(train_mod, "free_memory", lambda device: 10**12)
    auto = _grpo(run_tiny, "auto", micro_batch_size=0, **kw)
    assert sizes == [3, 8]  # auto: all 8 sequences in one micro-batch
    (_, g_fixed), (_, g_auto) = calls
    for n in g_fixed:
        torch.testing.assert_close(g_auto[n], g_fixed[n], rtol=1e-5, atol=1e-7, msg=n)
    p_fixed, p_auto = dict(fixed.named_parameters()), dict(auto.named_parameters())
    for n in p_fixed:  # atol: see test_micro_batched_step_equals_full_batch
        torch.testing.assert_close(p_auto[n], p_fixed[n], rtol=1e-5, atol=1e-5, msg=n)
    monkeypatch.setattr(train_mod, "free_memory", lambda device: None)
    _grpo(run_tiny, "cpu", micro_batch_size=0, **kw)
    assert sizes[-1] == train_mod.AUTO_MICRO_FALLBACK


def test_auto_micro_batch_sizes_from_free_memory(tiny_dir):
    """The auto size grows with the free memory, shrinks with the sequence length, is at least one
    sequence and at most the batch, and leaves room for gradients and AdamW state."""
    from llm.loading import precision
    from llm.train import AUTO_MICRO_FRACTION, auto_micro_batch, training_bytes

    m, prec = load_model(str(tiny_dir), "cpu"), precision("bf16-mixed", torch.device("cpu"))
    fixed = training_bytes(m, 0, prec, 64)
    per_token = training_bytes(m, 1, prec, 64) - fixed
    free = int((fixed + 10 * 100 * per_token) / AUTO_MICRO_FRACTION) + 1  # room for 10 x 100 tokens
    assert auto_micro_batch(m, 64, 100, prec, 64, free=free) == 10
    assert auto_micro_batch(m, 64, 200, prec, 64, free=free) == 5
    assert auto_micro_batch(m, 6, 100, prec, 64, free=free) == 6
    assert auto_micro_batch(m, 64, 100, prec, 64, free=fixed) == 1  # nothing left: one at a time
    assert auto_micro_batch(m, 64, 100, prec, 64, free=None) == 8  # CPU: the fixed fallback


def test_sampling_depends_on_the_step(run_tiny, monkeypatch):
    """Zero rewards and no KL: the model does not move, so only the seed can change the samples."""
    monkeypatch.setattr(
        grpo_mod, "group_rewards", lambda ex, groups, *_: torch.zeros(len(groups), len(groups[0]))
    )
    calls, gens = _capture(monkeypatch)
    # one prompt: the same batch at every step (a reordered batch would reshuffle the samples anyway)
    _grpo(run_tiny, "s", steps=2, n_train=1, prompts_per_step=1, num_generations=4, kl_coef=0.0)
    assert all(torch.equal(calls[0][0][n], calls[1][0][n]) for n in calls[0][0])  # unchanged model

    def by_prompt(groups):
        return {g[0].prompt_ids: sorted(r.response_ids for r in g) for g in groups}

    a, b = by_prompt(gens[0]), by_prompt(gens[1])
    assert a.keys() == b.keys() and a != b


def test_min_new_tokens_reaches_generation(tmp_path, run_tiny):
    """``--min-new-tokens`` masks the EOS ids: with it at the budget every completion is full length."""

    def lengths(name, **kw):
        _grpo(run_tiny, name, max_completion_length=10, **kw)
        rec = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
        return rec["grpo/completions/mean_length"], rec["grpo/completions/clipped_ratio"]

    free = lengths("free")
    assert free[0] < 10 and free[1] < 1  # precondition: some completion stops early without it
    assert lengths("forced", min_new_tokens=10) == (10.0, 1.0)
