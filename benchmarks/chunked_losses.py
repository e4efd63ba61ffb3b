"""Fused chunked full-vocabulary losses vs fused chunked CE vs a naive full-logits version (CPU).

Each variant runs once in a fresh subprocess (forward + backward of one token-mean loss) for its
peak RSS above the inputs' baseline (``ru_maxrss``: torch's CPU allocations are plain malloc/mmap,
so RSS sees them; tracemalloc would not). Time RATIOS come from one more subprocess that runs all
chunked variants interleaved, ``--repeat`` rounds, best process CPU time each (wall time is
printed too; on shared cores it is at the mercy of other jobs).
Variants:
  ce, gift, curio, entropy, dft   llm.fused.fused_token_loss (sft / gift / curio / entropy_sft / dft)
  gift_unfused                    llm.chunked.chunked_per_token + toybench.losses (--with-unfused)
  gift_naive                      full [N, V] logits, then toybench.losses.gift_loss
Ratios (targets from the issue):
  gift_time_ratio = time(GIFT fused) / time(CE fused)      (<= 1.5; also curio_, entropy_, dft_)
  gift_mem_ratio  = peak(GIFT fused) / peak(CE fused)      (<= 1.2; also per loss)
  naive_mem_ratio = peak(GIFT naive) / peak(GIFT fused)    (>= 4)
Defaults are the issue's shape (V = 151,936, B*T = 8,192, D = 1,024 as in Qwen3-0.6B). On a small
CPU that is too much work to run whole, so when ``tokens * hidden`` exceeds ``--work`` every variant
is run at ``chunk`` and ``2 * chunk`` tokens and its time and peak are extrapolated linearly in
tokens (each chunk costs the same; the chunk buffers are the same at both sizes), as stated in
the output. The naive variant is capped at ``--naive-max-tokens`` the same way (it needs
~3.5 MB per token at this V). A second table shows how fused CE and GIFT grow with tokens and V
(D = 256). ``make bench`` runs the default shape.

    python benchmarks/chunked_losses.py --tokens 2048 --hidden 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llm/, not an installed one

VARIANTS = ("ce", "gift", "curio", "entropy", "dft", "gift_naive")
FUSED = {"ce": "sft", "gift": "gift@5", "curio": "curio", "entropy": "entropy_sft@0.1", "dft": "dft"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(tokens: int, hidden: int, vocab: int):
    torch.manual_seed(0)
    h = (torch.randn(1, tokens, hidden) * 0.5).requires_grad_(True)
    w = (torch.randn(vocab, hidden) * 0.02).requires_grad_(True)
    hb, wb = torch.randn(1, tokens, hidden) * 0.5, torch.randn(vocab, hidden) * 0.02
    y = torch.randint(0, vocab, (1, tokens))
    mask = torch.ones(1, tokens)
    w.grad = torch.zeros_like(w)  # the weight gradient exists in every variant: part of the baseline
    h.grad = torch.zeros_like(h)
    return h, w, hb, wb, y, mask


def _step(name: str, inputs, chunk: int) -> tuple[float, float]:
    """One forward + backward of the token-mean loss of variant ``name``: (wall, process CPU) s."""
    from llm.chunked import chunked_per_token, full_per_token
    from llm.fused import fused_token_loss
    from llm.objectives import sft_token_fn
    from toybench.losses import reduce

    h, w, hb, wb, y, mask = inputs
    method = FUSED.get(name, "gift@5")
    aux = [(hb, wb)] if method.startswith(("gift", "curio")) else []
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "gift_naive":
        per_token = full_per_token(sft_token_fn("gift@5"), h, w, aux=aux, token_args={"targets": y})
    elif name == "gift_unfused":
        fn = sft_token_fn("gift@5")
        per_token = chunked_per_token(
            fn, h, w, aux=aux, token_args={"targets": y}, mask=mask, chunk_size=chunk
        )
    else:
        per_token = fused_token_loss(method, h, w, targets=y, aux=aux, mask=mask, chunk_size=chunk)
    reduce(per_token, mask, "token_mean").backward()
    return time.perf_counter() - t0, time.process_time() - c0


def run_variant(name: str, tokens: int, hidden: int, vocab: int, chunk: int, repeat: int) -> dict:
    """Peak RSS above the inputs (and the time of one run) of one variant, alone in this process."""
    inputs = _inputs(tokens, hidden, vocab)
    base = _rss_mb()
    dt = _step(name, inputs, chunk)[0]
    return {"variant": name, "time_s": dt, "peak_mb": _rss_mb() - base, "tokens": tokens}


def run_timing(names: list[str], tokens: int, hidden: int, vocab: int, chunk: int, rounds: int) -> dict:
    """Best-of-``rounds`` times of several variants in ONE process, interleaved round-robin, so that
    a change of machine load hits all of them alike."""
    inputs = _inputs(tokens, hidden, vocab)
    _step(names[0], inputs, chunk)  # warm-up (thread pool, first page faults), not timed
    best = dict.fromkeys(names, float("inf"))
    best_cpu = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for v in names:
            wall, cpu = _step(v, inputs, chunk)
            best[v], best_cpu[v] = min(best[v], wall), min(best_cpu[v], cpu)
    return {"variant": "timing", "tokens": tokens, "best_s": best, "best_cpu_s": best_cpu}


def _sub(a, v: str, tokens: int, hidden: int, vocab: int, repeat: int | None = None) -> dict | None:
    threads = a.time_threads if v.startswith("timing:") and a.time_threads else a.threads
    cmd = [sys.executable, __file__, "--variant", v, "--tokens", str(tokens), "--hidden", str(hidden)]
    cmd += ["--vocab", str(vocab), "--chunk", str(a.chunk), "--threads", str(threads)]
    cmd += ["--repeat", str(a.repeat if repeat is None else repeat)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"{v}: failed (rc={p.returncode}; out of memory?) {p.stderr[-300:]}", flush=True)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(a, v: str, tokens: int, hidden: int, vocab: int, cap: int) -> dict | None:
    """Run at ``tokens`` if it fits ``cap``; else at two sizes and extrapolate linearly."""
    if tokens <= cap:
        return _sub(a, v, tokens, hidden, vocab)
    n1 = max(a.chunk, cap // 2)
    n2 = 2 * n1
    r1, r2 = _sub(a, v, n1, hidden, vocab), _sub(a, v, n2, hidden, vocab)
    if r1 is None or r2 is None:
        return None
    out = {"variant": v, "tokens": tokens}
    for k in ("time_s", "peak_mb"):  # a load spike can make one point look cheaper: slope >= 0
        slope = max(0.0, (r2[k] - r1[k]) / (n2 - n1))
        out[k] = r2[k] + slope * (tokens - n2)
    out["note"] = (
        f"peak measured at {n1} and {n2} tokens ({r1['peak_mb']:.0f}, {r2['peak_mb']:.0f} MB), "
        "extrapolated linearly"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192, help="B*T")
    ap.add_argument("--hidden", type=int, default=1024, help="D")
    ap.add_argument("--vocab", type=int, default=151_936, help="V")
    ap.add_argument("--chunk", type=int, default=512, help="tokens per chunk")
    ap.add_argument("--work", type=int, default=2048 * 256, help="largest tokens*hidden run whole")
    ap.add_argument("--naive-max-tokens", type=int, default=2048, help="largest B*T the naive variant runs")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (best time)")
    ap.add_argument("--with-unfused", action="store_true", help="also time the unfused chunked GIFT")
    ap.add_argument("--no-scaling", action="store_true", help="skip the tokens / V growth table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--time-threads",
        type=int,
        default=0,
        help="threads of the time-ratio run (default: --threads); 1 measures work without the "
        "spin-waits that busy shared cores add to multi-threaded CPU time",
    )
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.variant.startswith("timing:"):
        names = a.variant.split(":", 1)[1].split(",")
        print(json.dumps(run_timing(names, a.tokens, a.hidden, a.vocab, a.chunk, a.repeat)))
        return
    if a.variant:
        print(json.dumps(run_variant(a.variant, a.tokens, a.hidden, a.vocab, a.chunk, a.repeat)))
        return
    t_start = time.perf_counter()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cpus: {os.cpu_count()})", flush=True)
    cap = max(a.chunk, a.work // a.hidden)
    variants = list(VARIANTS) + (["gift_unfused"] if a.with_unfused else [])
    res = {}
    for v in variants:
        r = measure(a, v, a.tokens, a.hidden, a.vocab, min(cap, a.naive_max_tokens) if "naive" in v else cap)
        if r is None:
            continue
        res[v] = r
        t = f"time {r['time_s']:8.3f} s" if "note" not in r else "time        - "
        print(f"{v:12s} {t}  peak {r['peak_mb']:9.1f} MB  {r.get('note', '')}", flush=True)
    # time ratios: all chunked variants in one process, interleaved, best of --repeat rounds
    n_time = min(a.tokens, cap)
    timed = [v for v in ("ce", "gift", "curio", "entropy", "dft", "gift_unfused") if v in res]
    rounds = a.repeat if n_time == a.tokens else min(a.repeat, 2)  # extrapolated shapes: 2 rounds
    tr_run = _sub(a, "timing:" + ",".join(timed), n_time, a.hidden, a.vocab, repeat=rounds)
    # CPU time of this process (all its threads): the work done, whatever other jobs take the
    # cores; wall time on shared cores measured +-50% between identical runs here.
    best = tr_run["best_cpu_s"] if tr_run else {}
    wall = tr_run["best_s"] if tr_run else {}
    print(
        f"V={a.vocab} B*T={a.tokens} D={a.hidden} chunk={a.chunk} threads={a.threads} "
        f"time-ratio threads={a.time_threads or a.threads}"
    )
    print(
        f"time ratios: process CPU time, best of {rounds} interleaved rounds in one process at "
        f"{n_time} tokens; "
        f"peaks: one run per variant in a fresh process"
    )
    fmt = lambda x: f"{x:.2f}" if x is not None else "nan"
    c = res.get("ce")
    ratios = {}
    scale = a.tokens / n_time  # each chunk costs the same: time is linear in tokens
    if scale != 1:
        print(f"times are those at {n_time} tokens x {scale:g} (linear in tokens), i.e. at {a.tokens}")
    print(f"{'loss':12s} {'cpu s':>8s} {'wall s':>8s} {'time/CE':>8s} {'wall/CE':>8s} {'peak/CE':>8s}")
    for v in ("gift", "curio", "entropy", "dft", "gift_unfused"):
        if v in res and c and v in best:
            tr, mr = best[v] / best["ce"], res[v]["peak_mb"] / c["peak_mb"]
            ratios[v] = (tr, mr)
            wr = wall[v] / wall["ce"]
            print(f"{v:12s} {best[v] * scale:8.2f} {wall[v] * scale:8.2f} {tr:8.2f} {wr:8.2f} {mr:8.2f}")
    if "ce" in best:
        print(f"{'ce':12s} {best['ce'] * scale:8.2f} {wall['ce'] * scale:8.2f} {1:8.2f} {1:8.2f} {1:8.2f}")
    g, n = res.get("gift"), res.get("gift_naive")
    gt, gm = ratios.get("gift", (None, None))
    print(
        f"RESULT gift_time_ratio={fmt(gt)} gift_mem_ratio={fmt(gm)} "
        f"naive_mem_ratio={fmt(n and g and n['peak_mb'] / g['peak_mb'])}"
    )
    per_loss = []
    for v in ("curio", "entropy", "dft"):
        tr, mr = ratios.get(v, (None, None))
        per_loss.append(f"{v}_time_ratio={fmt(tr)} {v}_mem_ratio={fmt(mr)}")
    per_loss = " ".join(per_loss)
    print(f"RESULT {per_loss}")
    if not a.no_scaling:
        print(f"cost growth (fused, D=256, chunk={a.chunk}): tokens x V -> time s / peak MB")
        print(f"{'tokens':>7s} {'V':>7s} {'ce time':>8s} {'ce MB':>7s} {'gift time':>9s} {'gift MB':>7s}")
        for n_tok, vocab in (  # small enough to keep the default run within 5 minutes
            (256, a.vocab),
            (512, a.vocab),
            (1024, a.vocab),
            (512, a.vocab // 4),
            (512, a.vocab // 2),
        ):
            row = [_sub(a, v, n_tok, 256, vocab) for v in ("ce", "gift")]
            if None in row:
                continue
            print(
                f"{n_tok:7d} {vocab:7d} {row[0]['time_s']:8.2f} {row[0]['peak_mb']:7.0f} "
                f"{row[1]['time_s']:9.2f} {row[1]['peak_mb']:7.0f}",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
