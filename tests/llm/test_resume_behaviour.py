"""Resume behaviours of ``llm.checkpoint``, worked out by hand: the fallback past a broken newest
checkpoint loads the NEWEST intact one (not an older one), and the Python RNG state is restored."""

from __future__ import annotations

import random

import torch

from llm.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint


def _objects():
    model = torch.nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def _save_steps(root, steps):
    """Checkpoints whose weights are the step number everywhere (step k -> all weights k)."""
    model, opt, sched = _objects()
    for k in steps:
        with torch.no_grad():
            model.weight.fill_(float(k))
        save_checkpoint(root, k, model, opt, sched, {"data_pos": 10 * k}, keep=len(steps))


def test_fallback_loads_the_newest_intact_checkpoint(tmp_path):
    """Steps 1, 2, 3 saved; step 3's weights truncated. The newest intact one is step 2: weights 2,
    data position 20, LATEST pointing at it, step 3 moved aside (step 1 untouched)."""
    root = tmp_path / "checkpoint"
    _save_steps(root, [1, 2, 3])
    w = root / "step-000003" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-8])
    model, opt, sched = _objects()
    got = resume_checkpoint(root, model, opt, sched, log=lambda *_: None)
    assert got.path.name == "step-000002" and got.state["step"] == 2 and got.state["data_pos"] == 20
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))
    assert (root / "LATEST").read_text().strip() == "step-000002"
    assert (root / "corrupt-step-000003").is_dir() and (root / "step-000001").is_dir()


def test_fallback_skips_every_broken_newer_one(tmp_path):
    """Steps 1..4; 4 and 3 broken (a missing manifest, a truncated optimizer file): step 2 loads."""
    root = tmp_path / "checkpoint"
    _save_steps(root, [1, 2, 3, 4])
    (root / "step-000004" / "manifest.json").unlink()
    o = root / "step-000003" / "optim.pt"
    o.write_bytes(o.read_bytes()[:10])
    model, opt, sched = _objects()
    got = resume_checkpoint(root, model, opt, sched, log=lambda *_: None)
    assert got.state["step"] == 2 and torch.equal(model.weight, torch.full((1, 2), 2.0))


def test_python_rng_state_is_restored(tmp_path):
    """The Python draws after loading are the draws that followed the save: seed 123, save, draw
    three numbers; scramble the state; load; the same three numbers come out."""
    model, opt, sched = _objects()
    random.seed(123)
    random.random()  # a state that is not the freshly seeded one
    path = save_checkpoint(tmp_path / "checkpoint", 1, model, opt, sched, {})
    after_save = [random.random() for _ in range(3)]
    random.seed(999)
    torch.manual_seed(999)
    load_checkpoint(path, model, opt, sched)
    assert [random.random() for _ in range(3)] == after_save
