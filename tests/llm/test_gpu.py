"""GPU checks (``pytest -m gpu`` on a CUDA machine; each skips cleanly without one).

CUDA-graph decoding == eager decoding token for token (greedy and sampled with one generator) and a
graph replay after an optimizer step sees the new weights; bf16-mixed training close to fp32; the
fused SFT loss == the chunked one on CUDA; Liger kernels == plain (when ``liger_kernel`` and the
option exist); ``pipeline --tiny`` end to end on CUDA; a resumed CUDA run == the uninterrupted run.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from llm.data import arith_splits, collate, prompt_ids, sft_ids
from llm.loading import load_model, load_tokenizer
from llm.rollout import HFGenerator, Sampling, eos_ids

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture()
def cuda_tiny(tiny_dir):
    model, tok = load_model(str(tiny_dir), "cuda"), load_tokenizer(str(tiny_dir))
    model.eval()
    prompts = [prompt_ids(tok, e) for e in arith_splits(0, 8, 6)["eval"][:6]]
    prompts[1] = prompts[1][3:]  # different lengths: left padding is exercised
    return model, tok, prompts


def _params(m):
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in m.parameters()])


def _autocast(on: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if on else contextlib.nullcontext()


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("greedy", [True, False])
def test_graph_decode_equals_eager(cuda_tiny, greedy, autocast):
    import llm.rollout as rollout

    model, tok, prompts = cuda_tiny
    s = Sampling(
        24, greedy=greedy, temperature=1.2, top_k=16, top_p=0.95, eos_token_ids=eos_ids(model, tok),
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip

    def run(graph):
        rng = torch.Generator("cuda").manual_seed(7)
        with _autocast(autocast):
            return HFGenerator(model, rng=rng, graph=graph).generate(prompts, 4, s)

    eager = run(False)
    graphed = run(True)
    assert rollout._DECODERS[model].graph is not None  # the graph path really ran
    assert graphed == eager
    if not greedy:
        assert len({c.ids for g in eager for c in g}) > 4  # really sampled


@pytest.mark.parametrize("autocast", [False, True])
def test_graph_replay_sees_optimizer_step(tiny_dir, cuda_tiny, autocast):
    import llm.rollout as rollout

    _, tok, prompts = cuda_tiny
    model = load_model(str(tiny_dir), "cuda")
    s = Sampling(16, greedy=True, eos_token_ids=(tok.convert_tokens_to_ids("<unk>"),), pad_token_id=0)
    gen = HFGenerator(model, graph=True)
    with _autocast(autocast):
        before = gen.generate(prompts, 2, s)
    graph = rollout._DECODERS[model].graph
    assert graph is not None
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    ids = torch.tensor([prompts[0]], device="cuda")
    for _ in range(3):  # push one token up everywhere: the greedy paths change
        (-model(ids).logits.log_softmax(-1)[..., tok.convert_tokens_to_ids("7")].mean()).backward()
        opt.step()
        opt.zero_grad()
    with _autocast(autocast):
        after = gen.generate(prompts, 2, s)
        assert rollout._DECODERS[model].graph is graph  # replayed, not re-captured
        eager = HFGenerator(model, graph=False).generate(prompts, 2, s)
    assert after == eager and after != before


def _sft_batch(tok, n=8):
    exs = arith_splits(0, n, 4)["sft"][:n]
    return {k: v.cuda() for k, v in collate([sft_ids(tok, e) for e in exs], tok.pad_token_id).items()}


def _loss_and_grad(model, batch, method="sft", impl="chunked", autocast=False, aux=()):
    from llm.scoring import sft_token_loss

    model.zero_grad(set_to_none=True)
    with _autocast(autocast):
        per_token = sft_token_loss(model, batch, method, aux, chunk_size=16, impl=impl)
        loss = per_token.sum() / batch["loss_mask"].sum()
    loss.backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return loss.detach(), g


def test_bf16_mixed_step_close_to_fp32(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    model = load_model(str(tiny_dir), "cuda")
    batch = _sft_batch(tok)
    l32, g32 = _loss_and_grad(model, batch)
    l16, g16 = _loss_and_grad(model, batch, autocast=True)
    assert abs(l16 - l32) / l32 < 2e-2
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.99 and (g16.norm() / g32.norm() - 1).abs() < 5e-2, (cos, g16.norm(), g32.norm())


@pytest.mark.parametrize("method", ["sft", "gift@5"])
def test_fused_equals_chunked_on_cuda(tiny_dir, method):
    tok = load_tokenizer(str(tiny_dir))
    model = load_model(str(tiny_dir), "cuda")
    aux = (
        [load_model(str(tiny_dir), "cuda").eval().requires_grad_(False)] if method.startswith("gift") else []
    )
    batch = _sft_batch(tok)
    lc, gc = _loss_and_grad(model, batch, method, "chunked", aux=aux)
    lf, gf = _loss_and_grad(model, batch, method, "fused", aux=aux)
    torch.testing.assert_close(lf, lc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gf, gc, rtol=1e-4, atol=1e-6)


def test_liger_equals_plain(tiny_dir, tmp_path):
    pytest.importorskip("liger_kernel")
    from llm.config import SFTConfig
    from llm.sft import run_sft

    if "use_liger_kernel" not in SFTConfig.__dataclass_fields__:
        pytest.skip("this checkout has no --use-liger-kernel option")
    kw = dict(model=str(tiny_dir), device="cuda", steps=2, batch_size=8, warmup=0, n_heldout=2,
              eval_every=100, ckpt_every=100, prompt_style="compact", n_train=16, eval_prompts=1,
              max_completion_length=8)  # fmt: skip
    plain = run_sft(SFTConfig(out=str(tmp_path / "plain"), **kw))
    liger = run_sft(SFTConfig(out=str(tmp_path / "liger"), use_liger_kernel=True, **kw))
    assert liger["sft/loss"] == pytest.approx(plain["sft/loss"], rel=2e-2)
    assert liger["sft/grad_norm"] == pytest.approx(plain["sft/grad_norm"], rel=5e-2)


def test_pipeline_tiny_on_cuda_end_to_end(tiny_dir, tmp_path):
    import pandas as pd

    from llm.cli import main

    out = tmp_path / "pipe"
    args = ["pipeline", "--tiny", "--quick", "--device", "cuda", "--out", str(out), "--cache-dir",
            str(tiny_dir.parent), "--tiny-pretrain-steps", "40"]  # fmt: skip
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    assert {"base", "sft", "gift@5"} <= set(df["method"]) and df["pass@1"].between(0, 1).all()
    assert (out / "gift@5" / "grpo" / "final").is_dir()


def test_resume_on_cuda_equals_uninterrupted(tiny_dir, tmp_path):
    """Bitwise, with deterministic kernels (cuBLAS workspace set by tests/conftest.py, the math
    attention backend: no atomics in the backward)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from llm.config import SFTConfig
    from llm.sft import run_sft

    kw = dict(model=str(tiny_dir), device="cuda", steps=4, batch_size=4, ckpt_every=2, eval_every=2,
              method="gift@5", n_train=8, n_heldout=2, eval_prompts=1, max_completion_length=8,
              warmup=1, prompt_style="compact")  # fmt: skip
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            full = run_sft(SFTConfig(out=str(tmp_path / "full"), **kw))
            run_sft(SFTConfig(out=str(tmp_path / "cut"), stop_after=2, **kw))
            res = run_sft(SFTConfig(out=str(tmp_path / "cut"), resume=True, **kw))
    finally:
        torch.use_deterministic_algorithms(False)
    a = _params(load_model(str(tmp_path / "full" / "final"), "cpu"))
    b = _params(load_model(str(tmp_path / "cut" / "final"), "cpu"))
    assert res["sft/loss"] == full["sft/loss"], (res["sft/loss"], full["sft/loss"])
    assert torch.equal(a, b), f"max |resumed - full| = {(a - b).abs().max():.3g}"


def test_fused_adamw_equals_foreach(tiny_dir):
    """``make_optimizer`` takes torch's fused AdamW on CUDA: three steps give the foreach path's weights."""
    from llm.train import make_optimizer

    models = [load_model(str(tiny_dir), "cuda") for _ in range(2)]
    fused, _ = make_optimizer(models[0], 1e-3, 10, 0, 1.0)
    assert fused.defaults["fused"]
    kw = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0, foreach=True)
    plain = torch.optim.AdamW(models[1].parameters(), **kw)
    ids = torch.randint(0, models[0].config.vocab_size, (2, 12), device="cuda")
    for _ in range(3):
        for m, opt in zip(models, (fused, plain)):
            m(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.testing.assert_close(_params(models[0]), _params(models[1]), rtol=0, atol=1e-5)
