"""Speed of the tiny transformer: training tokens/s, sampling tokens/s, KV-cache speed-up, and the
seed-vectorised pipeline (``GPTStack``) against the Python loop over seeds.

Uses the default tiny-scale model (``TinyConfig().model_config``) on one CPU thread unless
``--threads`` says otherwise. The pipeline part runs ``toybench.tiny.pipeline.run_seeds`` at the
``--quick`` report's settings (``quick_config``) for ``--methods``, looped (``vectorise=False``, one
plain GPT per seed, as the report ran before) and vectorised, in this one process; it prints how
the cost grows with the number of seeds. The base is a fresh, untrained model unless
``--pretrained`` (then the cached base of ``prepare``, pretrained once if missing): an untrained
base never emits eos, so every sample runs to the full length (the worst case of sampling).
Last line: ``RESULT train_tok_s=<x> sample_tok_s=<y> kv_speedup=<z> seeds=<S> loop_s=<a>
vectorised_s=<b> seeds_speedup=<a/b> seeds_speedup_cpu=<c>`` (wall times; ``c`` is the same ratio
in process CPU time, which other jobs on shared cores barely move at one thread).

    .venv/bin/python benchmarks/transformer_speed.py [--batch 256] [--repeats 5] [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from toybench import losses
from toybench.tasks.arith import split_puzzles
from toybench.tiny.config import TinyConfig, quick_config
from toybench.tiny.data import encode_prompts, expert_data
from toybench.tiny.model import GPT, completion_logprobs, generate
from toybench.tiny.pipeline import Setup, prepare, run_seeds


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call: CPU time is the work done, whatever other jobs on the
    machine take from the cores (at one thread it barely moves under load; wall time does)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0


def _total(pairs) -> tuple[float, float]:
    """Sum of (wall, CPU) pairs."""
    pairs = list(pairs)
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def _model_speed(args: argparse.Namespace) -> tuple[float, float, float]:
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
    print(
        f"model: {mcfg} ({n_params} parameters), batch {B}, prompt {P}, completion {N}, "
        f"threads {args.threads}"
    )
    print(
        f"train step {t_train * 1e3:.1f} ms; sample with KV cache {t_cache * 1e3:.1f} ms; "
        f"recomputing the prefix {t_full * 1e3:.1f} ms"
    )
    return B * (P + N - 1) / t_train, B * N / t_cache, t_full / t_cache


def _setup(pretrained: bool) -> Setup:
    cfg = quick_config()
    if pretrained:
        return prepare(cfg, progress=False)
    splits = split_puzzles(
        cfg.task_seed, cfg.n_sft_puzzles, cfg.n_rl_puzzles, cfg.n_eval_puzzles, **cfg.task_knobs
    )
    P, N = cfg.prompt_len, cfg.max_completion_length
    prompts = {k: encode_prompts(v, P) for k, v in splits.items()}
    torch.manual_seed(cfg.pretrain_seed)
    base = GPT(cfg.model_config).eval().requires_grad_(False)
    sft, heldout = expert_data(splits["sft"], P, N)[0], expert_data(splits["eval"], P, N)[0]
    return Setup(cfg, splits, prompts, sft, heldout, base, {"cached": False, "untrained": True})


def _seed_speed(args: argparse.Namespace) -> tuple[tuple[float, float], tuple[float, float]]:
    setup = _setup(args.pretrained)
    methods = args.methods.split(",")
    S = args.seeds
    for m in methods:  # warm-up (allocator, first-call costs) of both paths
        run_seeds(setup, m, [0], vectorise=False)
        run_seeds(setup, m, [0, 1], vectorise=True)
    # the loop is S independent runs: time each seed once; the loop over s seeds costs the first s
    per_seed = [_total(_timed(run_seeds, setup, m, [s], vectorise=False) for m in methods) for s in range(S)]
    sizes = sorted({1, 2, S} | ({S // 2} if S > 3 else set()))
    vec = {n: _total(_timed(run_seeds, setup, m, range(n), vectorise=True) for m in methods) for n in sizes}
    print(
        f"pipeline: quick_config, methods {methods}, "
        f"{'cached pretrained' if args.pretrained else 'untrained'} base, threads {args.threads}"
    )
    print(
        "| seeds | loop s | vectorised s | loop / vectorised | vectorised s per seed "
        "| CPU: loop / vectorised |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        loop = _total(per_seed[:n])
        v = vec[n]
        print(
            f"| {n} | {loop[0]:.2f} | {v[0]:.2f} | {loop[0] / v[0]:.2f} | {v[0] / n:.2f} "
            f"| {loop[1] / v[1]:.2f} |"
        )
    return _total(per_seed), vec[S]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="sequences per step")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (the best is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the loop-vs-vectorised comparison")
    ap.add_argument(
        "--methods", default="sft,gift@3,curio", help="comma-separated methods of the pipeline part"
    )
    ap.add_argument("--pretrained", action="store_true", help="use the cached pretrained base (see above)")
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    torch.set_num_threads(args.threads)
    train_tok_s, sample_tok_s, kv = _model_speed(args)
    loop, vec = _seed_speed(args)
    print(
        f"RESULT train_tok_s={train_tok_s:.0f} sample_tok_s={sample_tok_s:.0f} kv_speedup={kv:.2f} "
        f"seeds={args.seeds} loop_s={loop[0]:.2f} vectorised_s={vec[0]:.2f} "
        f"seeds_speedup={loop[0] / vec[0]:.2f} "
        f"seeds_speedup_cpu={loop[1] / vec[1]:.2f}"
    )


if __name__ == "__main__":
    main()
