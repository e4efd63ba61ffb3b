"""Chunked full-vocabulary losses vs plain chunked CE vs a naive full-logits version (CPU).

Each variant runs in a fresh subprocess (forward + backward of one reduced loss) and reports wall
time and peak RSS above the inputs' baseline (``ru_maxrss``). Ratios:
  gift_time_ratio = time(GIFT chunked) / time(CE chunked)       (target <= 1.5)
  gift_mem_ratio  = peak(GIFT chunked) / peak(CE chunked)       (target <= 1.2)
  naive_mem_ratio = peak(GIFT naive)   / peak(GIFT chunked)     (target >= 4)
Defaults are the issue's (V = 151,936, B*T = 8,192, D = 1,024 as in Qwen3-0.6B); on a small CPU use
``--tokens 1024 --hidden 256``. If the naive variant does not fit it is run at ``--naive-tokens``
and its peak scaled linearly in tokens (stated in the output).

    python benchmarks/chunked_losses.py --tokens 1024 --hidden 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

VARIANTS = ("ce", "gift", "curio", "entropy", "gift_naive")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_variant(name: str, tokens: int, hidden: int, vocab: int, chunk: int) -> dict:
    from llm.chunked import chunked_per_token, full_per_token
    from llm.objectives import sft_token_fn
    from toybench.losses import reduce

    torch.manual_seed(0)
    h = (torch.randn(1, tokens, hidden) * 0.5).requires_grad_(True)
    w = (torch.randn(vocab, hidden) * 0.02).requires_grad_(True)
    hb, wb = torch.randn(1, tokens, hidden) * 0.5, torch.randn(vocab, hidden) * 0.02
    y = torch.randint(0, vocab, (1, tokens))
    mask = torch.ones(1, tokens)
    w.grad = torch.zeros_like(w)  # the weight gradient exists in every variant: part of the baseline
    h.grad = torch.zeros_like(h)
    base = _rss_mb()
    method = {"ce": "sft", "entropy": "entropy_sft@0.1", "gift": "gift@5", "gift_naive": "gift@5"}.get(
        name, name
    )
    fn = sft_token_fn(method)
    aux = [(hb, wb)] if method.startswith(("gift", "curio")) else []
    t0 = time.perf_counter()
    if name == "gift_naive":
        per_token = full_per_token(fn, h, w, aux=aux, token_args={"targets": y})
    else:
        per_token = chunked_per_token(
            fn, h, w, aux=aux, token_args={"targets": y}, mask=mask, chunk_size=chunk
        )
    reduce(per_token, mask, "token_mean").backward()
    dt = time.perf_counter() - t0
    return {"variant": name, "time_s": dt, "peak_mb": _rss_mb() - base, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192, help="B*T")
    ap.add_argument("--hidden", type=int, default=1024, help="D")
    ap.add_argument("--vocab", type=int, default=151_936, help="V")
    ap.add_argument("--chunk", type=int, default=512, help="tokens per chunk")
    ap.add_argument(
        "--naive-tokens", type=int, default=0, help="run naive at this B*T and scale (0 = --tokens)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.variant:
        print(json.dumps(run_variant(a.variant, a.tokens, a.hidden, a.vocab, a.chunk)))
        return
    res = {}
    for v in VARIANTS:
        n = a.naive_tokens if (v == "gift_naive" and a.naive_tokens) else a.tokens
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            v,
            "--tokens",
            str(n),
            "--hidden",
            str(a.hidden),
            "--vocab",
            str(a.vocab),
            "--chunk",
            str(a.chunk),
            "--threads",
            str(a.threads),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{v}: failed (rc={p.returncode}; out of memory?) {p.stderr[-300:]}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if r["tokens"] != a.tokens:
            r["peak_mb"] *= a.tokens / r["tokens"]
            r["note"] = f"run at {r['tokens']} tokens, peak scaled linearly"
        res[v] = r
        print(f"{v:11s} time {r['time_s']:8.3f} s  peak {r['peak_mb']:9.1f} MB  {r.get('note', '')}")
    print(f"V={a.vocab} B*T={a.tokens} D={a.hidden} chunk={a.chunk} threads={a.threads}")
    for v in ("gift", "curio", "entropy"):
        if v in res and "ce" in res:
            tr, mr = res[v]["time_s"] / res["ce"]["time_s"], res[v]["peak_mb"] / res["ce"]["peak_mb"]
            print(f"{v}: time_ratio={tr:.2f} mem_ratio={mr:.2f}")
    g, c, n = res.get("gift"), res.get("ce"), res.get("gift_naive")
    fmt = lambda x: f"{x:.2f}" if x is not None else "nan"
    print(
        f"RESULT gift_time_ratio={fmt(g and c and g['time_s'] / c['time_s'])} "
        f"gift_mem_ratio={fmt(g and c and g['peak_mb'] / c['peak_mb'])} "
        f"naive_mem_ratio={fmt(n and g and n['peak_mb'] / g['peak_mb'])}"
    )


if __name__ == "__main__":
    main()
