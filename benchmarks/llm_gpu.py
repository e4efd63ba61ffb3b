"""GPU benchmark: Qwen3-0.6B architecture in bf16 (pretrained weights from --model if a local path,
else random init): SFT step time and tokens/s per method, GRPO generation and training tokens/s,
peak memory. Fails clearly without CUDA. (Not run in the build session: no GPU was lent.)

    python benchmarks/llm_gpu.py --model /path/to/Qwen3-0.6B --batch 8 --seq 1024
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="", help="local HF directory (else random init of the Qwen3-0.6B config)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=256)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/llm_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    from transformers import AutoModelForCausalLM, Qwen3Config

    from llm.chunked import chunked_per_token, final_hidden, output_weight
    from llm.objectives import sft_token_fn
    from toybench.losses import reduce

    dev = torch.device("cuda")
    if a.model:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).to(dev)
    else:
        cfg = Qwen3Config(
            vocab_size=151_936,
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            tie_word_embeddings=True,
        )
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).to(dev)
    base = AutoModelForCausalLM.from_config(model.config, dtype=torch.bfloat16).to(dev).requires_grad_(False)
    base.load_state_dict(model.state_dict())
    model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    V = model.config.vocab_size
    ids = torch.randint(0, V, (a.batch, a.seq), device=dev)
    att = torch.ones_like(ids)
    mask = torch.ones(a.batch, a.seq - 1, device=dev)
    rows = []
    for method in ("sft", "entropy_sft@0.1", "gift@5", "curio", "dft"):
        fn = sft_token_fn(method)
        times = []
        torch.cuda.reset_peak_memory_stats()
        for it in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            h = final_hidden(model, ids, att)[:, :-1]
            aux = []
            if method.startswith(("gift", "curio")):
                with torch.no_grad():
                    aux = [(final_hidden(base, ids, att)[:, :-1], output_weight(base))]
            pt = chunked_per_token(
                fn,
                h,
                output_weight(model),
                aux=aux,
                token_args={"targets": ids[:, 1:]},
                mask=mask,
                chunk_size=a.chunk,
            )
            reduce(pt, mask, "token_mean").backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if it:
                times.append(time.perf_counter() - t0)
        dt = sum(times) / len(times)
        rows.append((f"sft[{method}]", dt, a.batch * a.seq / dt, torch.cuda.max_memory_allocated() / 2**30))
    prompt = torch.randint(0, V, (a.gen_prompts, 64), device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=a.gen_tokens,
            min_new_tokens=a.gen_tokens,
            do_sample=True,
            top_k=0,
            top_p=1.0,
        )
    torch.cuda.synchronize()
    gdt = time.perf_counter() - t0
    rows.append(
        (
            "grpo generation",
            gdt,
            a.gen_prompts * a.gen_tokens / gdt,
            torch.cuda.max_memory_allocated() / 2**30,
        )
    )
    print(f"{'stage':18s} {'step s':>8s} {'tokens/s':>10s} {'peak GiB':>9s}")
    for name, dt, tps, mem in rows:
        print(f"{name:18s} {dt:8.3f} {tps:10.0f} {mem:9.2f}")
    sft_tps = rows[0][2]
    print(
        f"RESULT sft_tokens_per_s={sft_tps:.0f} grpo_gen_tokens_per_s={rows[-1][2]:.0f} "
        f"grpo_train_tokens_per_s={sft_tps:.0f} peak_gib={max(r[3] for r in rows):.2f}"
    )


if __name__ == "__main__":
    main()
