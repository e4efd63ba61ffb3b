"""Training-loop behaviours of ``llm.train`` / ``llm.sft`` (its normaliser:
``toybench.objectives.normalise``), worked out by hand: the data order is
reshuffled every epoch; the LR schedule steps after the optimizer (step 0 uses the first
warm-up LR); the ``constant`` reduction divides by the GLOBAL padded length over micro-batches."""

from __future__ import annotations

import torch

from llm.train import Normaliser, batch_indices, make_optimizer, optimizer_step
from toybench.objectives import Counts, normalise


def test_every_epoch_is_a_permutation_and_the_order_changes_between_epochs():
    """n = 8, batch 8: each step is one epoch, so each batch holds 0..7 once; over 4 epochs the
    orders are not all the same (a fixed order would repeat the same batches forever)."""
    epochs = [batch_indices(8, step, 8, seed=3) for step in range(4)]
    assert all(sorted(e) == list(range(8)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4
    # n = 5, batch 2: steps 0-1 and the first index of step 2 are epoch 0, the rest epoch 1
    flat = [i for step in range(5) for i in batch_indices(5, step, 2, seed=3)]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    assert flat[:5] != flat[5:]


def test_lr_schedule_steps_after_the_optimizer():
    """lr 0.1, warm-up 3: factor(s) = (s + 1) / 4 for s < 3. Adam's first two updates with a
    constant gradient move each weight by exactly the LR in use (m_hat / sqrt(v_hat) = sign(g)):
    step 0 uses 0.1 * 1/4 = 0.025, step 1 uses 0.1 * 2/4 = 0.05; total 0.075. A scheduler stepped
    before the optimizer would give 0.05 then 0.075."""
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    opt, sched = make_optimizer(model, lr=0.1, steps=10, warmup=3, min_lr_ratio=0.1)
    moved = []
    for step in range(2):
        before = model.weight.detach().clone()
        loss = model(torch.ones(1, 3)).sum()  # d/dw = 1 for every weight
        loss.backward()
        optimizer_step(model, opt, sched, loss.detach(), clip=0.0, step=step, last_ckpt="")
        moved.append(float((before - model.weight.detach()).mean()))
    assert abs(moved[0] - 0.025) < 1e-6 and abs(moved[1] - 0.05) < 1e-6, moved
    assert abs(sched.get_last_lr()[0] - 0.075) < 1e-12  # the LR of step 2: 0.1 * 3/4


def test_constant_reduction_divides_by_the_global_padded_length():
    """Two micro-batches of 2 sequences, padded to T = 3 and T = 5, every token counted, per-token
    value 1. Global: 4 sequences x T_max 5 = 20, so the shares are 6/20 and 10/20, total 0.8 (the
    value of one batch of the 4 sequences padded to 5). Local lengths would give 6/12 + 10/20 = 1."""
    masks = [torch.ones(2, 3), torch.ones(2, 5)]
    norm = Normaliser.of(masks)  # what llm.sft does: global counts, then each piece's share
    assert (norm.seqs, norm.t_max, norm.tokens) == (4.0, 5.0, 16.0)
    counts = Counts(norm.seqs, norm.tokens, norm.t_max)
    total = sum(float(normalise(torch.ones_like(m), m, "constant", counts)) for m in masks)
    assert abs(total - 0.8) < 1e-6  # float32 masks


def test_constant_reduction_sft_step_is_the_same_split_or_not(run_tiny):
    """The SFT loop under ``constant``: one step over 4 sequences of different lengths in one
    batch or in 4 micro-batches of 1 updates the weights identically (same global normaliser)."""
    a, _ = run_tiny("sft", "a", steps=1, batch_size=4, grad_accum=1, reduction="constant")
    b, _ = run_tiny("sft", "b", steps=1, batch_size=4, grad_accum=4, reduction="constant")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
