"""GPU check of the llm loops at Qwen3-0.6B size (one GPU, ~5 min on an H200).

Weights cannot be downloaded, so the model is the Qwen3-0.6B configuration with random weights
(real sizes: 28 layers, d=1024, V=151,936, tied embeddings; ~0.6B parameters), run as the loops run
it: fp32 master weights, bf16 autocast, gradient checkpointing, the chunked-vocabulary losses.

Measured (printed as ``RESULT`` lines):
  sft[sft], sft[gift@5], each by --loss-impl chunked and fused (``llm.scoring.sft_token_loss``):
      tokens/s of one optimizer step (forward + backward + AdamW) on batch x seq tokens, and
      MFU = 6 * N_params * tokens/s (+ attention, 12 * L * d * seq) over the GPU's bf16 dense
      peak (--peak-tflops, H200: 989).
  grpo generation: completion tokens/s of ``llm.rollout.generate`` (KV cache, sampling at T=1).
  grpo train: tokens/s of the GRPO update (llm.grpo.grpo_update: micro-batches, tempered
      log-probs, loss) on --grpo-seqs x --completion tokens, and its peak memory
      (default 8 x 1024 completion tokens, checkpointing on).

    python benchmarks/llm_gpu.py             # defaults fit ~8 minutes on one H200
    python benchmarks/llm_gpu.py --quick     # smaller shapes, a smoke test (~1 min)

Without CUDA it prints a message and exits 0 (nothing is measured on CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llm/, not an installed one

QWEN3_06B = dict(
    vocab_size=151_936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40_960,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)


def flops_per_token(model, seq: int) -> float:
    """Training FLOPs per token: 6 N (dense) + 12 L d T (attention scores and values, fwd + bwd)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    return 6 * n + 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float:
    """Peak allocated CUDA memory since the last reset (0 on CPU), then reset."""
    if not torch.cuda.is_available():
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def timed(fn, reps: int) -> float:
    """Mean seconds of ``fn()`` over ``reps`` runs after one untimed warm-up."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="SFT sequences per step")
    ap.add_argument("--seq", type=int, default=1024, help="SFT tokens per sequence")
    ap.add_argument("--chunk", type=int, default=4096, help="chunk_size of the chunked losses")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per measurement")
    ap.add_argument("--gen-prompts", type=int, default=16, help="prompts of the generation benchmark")
    ap.add_argument("--num-generations", type=int, default=8, help="samples per prompt")
    ap.add_argument("--gen-tokens", type=int, default=256, help="completion tokens per sample (forced)")
    ap.add_argument("--grpo-seqs", type=int, default=8, help="sequences of the GRPO update")
    ap.add_argument("--completion", type=int, default=1024, help="completion tokens per GRPO sequence")
    ap.add_argument("--micro-batch-size", type=int, default=4, help="GRPO micro-batch (sequences)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H200 SXM: 989)")
    ap.add_argument("--quick", action="store_true", help="small shapes: a smoke test")
    ap.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)  # code path check, 2 layers
    a = ap.parse_args()
    if a.quick or a.cpu_smoke:
        a.batch, a.seq, a.reps, a.gen_prompts, a.gen_tokens, a.completion = 2, 256, 1, 4, 32, 256
    if not torch.cuda.is_available() and not a.cpu_smoke:
        print("benchmarks/llm_gpu.py: no CUDA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 0
    from transformers import AutoModelForCausalLM, Qwen3Config

    from llm.data import collate
    from llm.grpo import grpo_update, micro_batches, rollout_batch
    from llm.loading import precision
    from llm.rollout import Rollout
    from llm.scoring import sft_token_loss
    from llm.train import Normaliser, make_optimizer, prepare_model
    from toybench.objectives import Counts, normalise

    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prec = precision("auto", dev)  # bf16-mixed: fp32 master weights, bf16 autocast
    shape = QWEN3_06B | (dict(num_hidden_layers=2, vocab_size=4096) if a.cpu_smoke else {})
    model = AutoModelForCausalLM.from_config(Qwen3Config(**shape), dtype=torch.float32).to(dev)
    model = prepare_model(model, prec, checkpointing=True)
    base = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32).to(dev)
    base.load_state_dict(model.state_dict())
    base.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Qwen3-0.6B config, random init, {n_params / 1e9:.3f}B parameters, {prec.name}, checkpointing"
    )
    V = model.config.vocab_size
    opt, sched = make_optimizer(model, 1e-5, 100, 0, 1.0)

    # ---- SFT steps: sft and gift@5 (gift also runs the frozen base's forward)
    seqs = [(torch.randint(0, V, (a.seq,)).tolist(), [0] * 64 + [1] * (a.seq - 64)) for _ in range(a.batch)]
    batch = {k: v.to(dev) for k, v in collate(seqs, 0).items()}
    norm = Normaliser.of([batch["loss_mask"]])
    for method, impl in [(m, i) for m in ("sft", "gift@5") for i in ("chunked", "fused")]:
        aux = [base] if method.startswith("gift") else []

        def sft_step(method=method, impl=impl, aux=aux):
            model.train()
            with prec.autocast():
                per_token = sft_token_loss(model, batch, method, aux, a.chunk, impl)
                loss = normalise(
                    per_token, batch["loss_mask"], "token_mean", Counts(norm.seqs, norm.tokens, norm.t_max)
                )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        peak_gib()
        dt = timed(sft_step, a.reps)
        tps = a.batch * a.seq / dt
        mfu = tps * flops_per_token(model, a.seq) / (a.peak_tflops * 1e12)
        peak = peak_gib()
        print(
            f"RESULT sft[{method}] loss_impl={impl} batch={a.batch} seq={a.seq} step_s={dt:.3f} "
            f"tokens_per_s={tps:.0f} mfu={mfu:.3f} peak_gib={peak:.2f}"
        )

    # ---- GRPO generation: KV-cached sampling of gen_prompts x num_generations completions
    prompt = torch.randint(0, V, (a.gen_prompts * a.num_generations, 64), device=dev)

    def gen():
        model.eval()
        with torch.no_grad(), prec.autocast():
            model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=a.gen_tokens,
                min_new_tokens=a.gen_tokens,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                use_cache=True,
                pad_token_id=0,
            )

    model.config.use_cache = True
    peak_gib()
    dt = timed(gen, 1)
    model.config.use_cache = False
    n_tok = a.gen_prompts * a.num_generations * a.gen_tokens
    print(
        f"RESULT grpo_generation seqs={a.gen_prompts * a.num_generations} completion={a.gen_tokens} "
        f"s={dt:.2f} tokens_per_s={n_tok / dt:.0f} peak_gib={peak_gib():.2f}"
    )

    # ---- GRPO update: grpo_seqs x completion tokens, micro-batched, checkpointing, KL to the base
    G = 4
    groups = [
        [
            Rollout(
                tuple(torch.randint(0, V, (64,)).tolist()),
                tuple(torch.randint(0, V, (a.completion,)).tolist()),
                "",
            )
            for _ in range(G)
        ]
        for _ in range(a.grpo_seqs // G)
    ]
    rb = rollout_batch(groups, 0, mask_truncated=False)
    rb["adv"] = torch.randn(len(rb["input_ids"]))
    mbs = micro_batches(rb, a.micro_batch_size, dev)
    cfg = SimpleNamespace(
        temperature=1.0,
        chunk_size=a.chunk,
        num_iterations=1,
        epsilon=0.2,
        epsilon_high=0.28,
        kl_coef=0.04,
        kl_kind="k3",
        loss_type="dapo",
        max_completion_length=a.completion,
        clip=1.0,
    )
    peak_gib()
    dt = timed(lambda: grpo_update(model, mbs, base, cfg, prec, opt, sched, 0, ""), a.reps)
    n_tok = a.grpo_seqs * (64 + a.completion)
    print(
        f"RESULT grpo_train seqs={a.grpo_seqs} completion={a.completion} micro_batch={a.micro_batch_size} "
        f"step_s={dt:.3f} tokens_per_s={n_tok / dt:.0f} peak_gib={peak_gib():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
