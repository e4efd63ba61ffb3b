"""Speed of the tiny transformer: training tokens/s, sampling tokens/s, KV-cache speed-up.

Uses the default tiny-scale model (``TinyConfig().model_config``) on one CPU thread unless
``--threads`` says otherwise. Last line: ``RESULT train_tok_s=<x> sample_tok_s=<y> kv_speedup=<z>``.

    .venv/bin/python benchmarks/transformer_speed.py [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from toybench import losses
from toybench.tiny.config import TinyConfig
from toybench.tiny.model import GPT, completion_logprobs, generate


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="sequences per step")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (the best is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TinyConfig()
    mcfg = cfg.model_config
    model = GPT(mcfg)
    P, N, B = cfg.prompt_len, cfg.max_completion_length, args.batch
    prompt = torch.randint(3, mcfg.vocab_size, (B, P))
    comp = torch.randint(3, mcfg.vocab_size, (B, N))
    mask = torch.ones_like(comp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        _, logits = completion_logprobs(model, prompt, comp)
        loss = losses.reduce(losses.sft_loss(logits, comp), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    eos = -1  # never stop early: every row samples N tokens

    def sample(use_cache: bool) -> None:
        generate(
            model, prompt, N, 1.0, eos_id=eos, generator=torch.Generator().manual_seed(0), use_cache=use_cache
        )

    t_train = _best(train_step, args.repeats)
    t_cache = _best(lambda: sample(True), args.repeats)
    t_full = _best(lambda: sample(False), args.repeats)
    n_params = sum(p.numel() for p in model.parameters())
    train_tok_s = B * (P + N - 1) / t_train
    sample_tok_s = B * N / t_cache
    print(
        f"model: {mcfg} ({n_params} parameters), batch {B}, prompt {P}, completion {N}, "
        f"threads {args.threads}"
    )
    print(
        f"train step {t_train * 1e3:.1f} ms; sample with KV cache {t_cache * 1e3:.1f} ms; "
        f"recomputing the prefix {t_full * 1e3:.1f} ms"
    )
    print(
        f"RESULT train_tok_s={train_tok_s:.0f} sample_tok_s={sample_tok_s:.0f} "
        f"kv_speedup={t_full / t_cache:.2f}"
    )


if __name__ == "__main__":
    main()
