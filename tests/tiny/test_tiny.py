"""Smoke and invariance tests of the tiny-transformer pipeline (tiny configs, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toybench.tiny import (
    TinyConfig,
    evaluate,
    pass_ks,
    prepare,
    pretrain_key,
    quick_config,
    run_grpo,
    run_method,
    run_sft,
)
from toybench.tiny.data import TOK, rewards
from toybench.tiny.model import GPT
from toybench.tiny.scale import Comparison, compare, decide, run_transformer_section

torch.set_num_threads(1)
METHODS = ("none", "sft", "entropy_sft@0.1", "gift@3", "curio", "pear_token", "dft")


def _cfg(**kw) -> TinyConfig:
    small = dict(
        n_layer=1, n_embd=32, pretrain_texts=500, pretrain_steps=20, sft_steps=4, rl_steps=2, rl_eval_every=1
    )
    small |= dict(post_sft_steps=2, post_sft_eval_every=1, eval_samples=4, n_eval_puzzles=8, seeds=1)
    return quick_config(**(small | kw))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return prepare(_cfg(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _params(m: GPT) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_base_is_cached_by_config_hash(tmp_path):
    cfg = _cfg()
    a = prepare(cfg, cache_dir=tmp_path, progress=False)
    b = prepare(cfg, cache_dir=tmp_path, progress=False)
    assert not a.base_info["cached"] and b.base_info["cached"]
    assert torch.equal(_params(a.base), _params(b.base))
    assert pretrain_key(cfg) != pretrain_key(_cfg(pretrain_steps=21))
    assert pretrain_key(cfg) == pretrain_key(_cfg(sft_steps=99))  # SFT knobs do not retrain the base


def test_splits_and_expert_data(setup):
    s = setup.splits
    assert not set(s["sft"]) & set(s["rl"]) and not set(s["rl"]) & set(s["eval"])
    assert setup.sft_data.prompt.shape[1] == setup.cfg.prompt_len
    assert (setup.sft_data.mask.sum(1) >= 2).all()  # at least one char + eos


@pytest.mark.parametrize("method", METHODS[1:])
def test_every_sft_method_trains(setup, method):
    import copy

    model = copy.deepcopy(setup.base).requires_grad_(True)
    before = _params(model)
    recs = run_sft(model, setup.sft_data, method, setup.cfg, seed=0, steps=3)
    assert [r["step"] for r in recs] == [0, 1, 2, 3]
    assert all(np.isfinite(r["train_loss"]) for r in recs[:-1])
    assert not torch.equal(before, _params(model))


def test_sft_does_not_touch_the_frozen_base(setup):
    import copy

    ref = _params(setup.base).clone()
    model = copy.deepcopy(setup.base).requires_grad_(True)
    run_sft(model, setup.sft_data, "gift@3", setup.cfg, seed=0, steps=2)
    assert torch.equal(ref, _params(setup.base))


def test_sft_lowers_the_sft_loss(setup):
    import copy

    from toybench.tiny.train import completion_nll

    model = copy.deepcopy(setup.base).requires_grad_(True)
    before = completion_nll(model, setup.sft_data)
    run_sft(model, setup.sft_data, "sft", setup.cfg, seed=0, steps=30)
    assert completion_nll(model, setup.sft_data) < before - 0.1


def test_rewards_use_the_verifier_and_require_eos(setup):
    p = setup.splits["eval"][0]
    from toybench.tasks import all_solutions

    sol = all_solutions(p)[0]
    ok = torch.tensor([TOK.encode(sol, eos=True) + [0] * (16 - len(sol) - 1)])
    no_eos = torch.tensor([TOK.encode(sol) + [0] * (16 - len(sol))])
    r, texts = rewards([p, p], torch.cat([ok, no_eos]))
    assert r.tolist() == [1.0, 0.0] and texts == [sol, sol]


@pytest.mark.parametrize("varying", [False, True])
def test_grpo_moves_only_on_reward_differences(setup, monkeypatch, varying):
    """Equal rewards in every group give zero advantages, so GRPO must leave the policy unchanged;
    rewards that differ inside groups must move it."""
    import copy

    import toybench.tiny.train as train

    def fake_rewards(puzzles, completion):
        r = torch.arange(completion.shape[0]) % 2 if varying else torch.ones(completion.shape[0])
        return r.float(), [""] * completion.shape[0]

    monkeypatch.setattr(train, "rewards", fake_rewards)
    model = copy.deepcopy(setup.base).requires_grad_(True)
    before = _params(model)
    recs = run_grpo(model, setup.splits["rl"], setup.prompts["rl"], _cfg(rl_steps=2), seed=0)
    assert len(recs) == 3 and all(np.isfinite(r["train_loss"]) for r in recs[:-1])
    assert torch.equal(before, _params(model)) != varying


def test_grpo_smoke_with_kl_and_real_rewards(setup):
    import copy

    model = copy.deepcopy(setup.base).requires_grad_(True)
    recs = run_grpo(model, setup.splits["rl"], setup.prompts["rl"], _cfg(rl_steps=2, kl_coef=0.1), seed=0)
    assert all(0 <= r["train_reward"] <= 1 for r in recs[:-1])


def test_pear_with_base_behaviour_policy(setup):
    import copy

    model = copy.deepcopy(setup.base).requires_grad_(True)
    recs = run_sft(model, setup.sft_data, "pear_block", _cfg(pear_behavior="base"), seed=0, steps=2)
    assert all(np.isfinite(r["train_loss"]) for r in recs[:-1])


def test_evaluate_metrics_are_consistent(setup):
    out = evaluate(
        setup.base,
        setup.splits["eval"],
        setup.prompts["eval"],
        4,
        setup.cfg.max_completion_length,
        1.0,
        torch.Generator().manual_seed(0),
        base=setup.base,
    )
    ks = pass_ks(4)
    assert ks == [1, 2, 4]
    vals = [out[f"pass@{k}"] for k in ks]
    assert all(0 <= v <= 1 for v in vals) and vals == sorted(vals)  # pass@k non-decreasing in k
    assert out["kl_base"] == pytest.approx(0.0, abs=1e-6)  # the base against itself
    assert out["entropy"] > 0 and 0 <= out["valid"] <= 1
    assert 0 <= out["distinct"] <= 4
    assert pass_ks(6) == [1, 2, 4, 6]


@pytest.mark.parametrize("method", ["none", "curio"])
def test_run_method_records_every_stage(setup, method):
    recs, summ = run_method(setup, method, seed=0)
    assert {r["stage"] for r in recs} == {"sft", "rl", "post_sft"}
    assert summ["method"] == method and 0 <= summ["rl_pass@1"] <= 1
    assert np.isfinite(summ["rl_delta_sft_loss"]) and np.isfinite(summ["post_sft_delta_reward"])


def test_transformer_section_writes_outputs(tmp_path):
    cfg = _cfg(methods=("none", "sft", "gift@3"), seeds=2)
    md, df = run_transformer_section(
        tmp_path, quick=True, seeds=2, cfg=cfg, cache_dir=tmp_path, progress=False
    )
    for f in (
        "transformer_records.csv",
        "transformer_summary.csv",
        "transformer_passk.png",
        "transformer_rl.png",
        "transformer_post_sft.png",
        "transformer_config.json",
    ):
        assert (tmp_path / f).exists(), f
    assert "## Tiny-transformer scale" in md and "GIFT" in md and "reproduce" in md
    assert set(df["method"]) == {"none", "sft", "gift@3"} and set(df["seed"]) == {0, 1}
    with pytest.raises(ValueError, match="seeds"):
        run_transformer_section(tmp_path, quick=True, seeds=0)


def test_compare_verdicts():
    import pandas as pd

    df = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "x": [1.0, 1.1, 0.9, 0.0, 0.1, -0.1]})
    assert compare(df, "a", "b", "x").verdict == "higher"
    assert compare(df, "b", "a", "x").verdict == "lower"
    df2 = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "x": [1.0, -1.0, 0.0, 0.1, -0.9, 1.1]})
    assert compare(df2, "a", "b", "x").verdict == "within noise"


def test_config_validation():
    with pytest.raises(ValueError, match="num_generations"):
        TinyConfig(num_generations=1)
    with pytest.raises(ValueError, match="sft_lr"):
        TinyConfig(sft_lr=0.0)
    with pytest.raises(ValueError, match="pear_behavior"):
        TinyConfig(pear_behavior="x")


def test_decide_claim_verdicts():
    hi, lo, no = Comparison(1, 0.1, "higher"), Comparison(-1, 0.1, "lower"), Comparison(0, 1, "within noise")
    assert decide([(hi, "higher"), (no, "not higher")]) is True
    assert decide([(hi, "higher"), (hi, "not higher")]) is False
    assert decide([(lo, "higher")]) is False
    assert decide([(no, "higher"), (hi, "higher")]) is None


def test_standalone_entry_point(tmp_path, monkeypatch):
    from toybench.tiny.scale import main

    monkeypatch.setenv("TOYBENCH_CACHE", str(tmp_path / "cache"))
    small = {
        "n-layer": 1, "n-embd": 32, "pretrain-texts": 300, "pretrain-steps": 3, "sft-steps": 2, "rl-steps": 1,
        "n-eval-puzzles": 4, "eval-samples": 2, "post-sft-steps": 1, "n-sft-puzzles": 40, "n-rl-puzzles": 20,
        "rl-prompts": 4, "num-generations": 2, "track-samples": 1,
    }  # fmt: skip
    argv = ["--out", str(tmp_path / "out"), "--seeds", "1", "--cfg.methods", "none", "sft"]
    for k, v in small.items():
        argv += [f"--cfg.{k}", str(v)]
    main(argv)
    assert "## Tiny-transformer scale" in (tmp_path / "out" / "transformer.md").read_text()
    assert list((tmp_path / "cache").glob("base-*.pt"))  # the base went to $TOYBENCH_CACHE
