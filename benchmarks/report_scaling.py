"""Wall time of the toybench comparison: growth with seeds, V and horizon; vectorised vs per-seed loop.

    python benchmarks/report_scaling.py            # full: scaling tables + default `toybench report`
    python benchmarks/report_scaling.py --quick    # smaller sweeps, `toybench report --quick`

The vectorised pipeline runs all seeds in one batch (one autograd call per step); the baseline
runs the SAME code once per seed in a Python loop, at the same settings. The report's map batches
configurations x cells x seeds into one run (default 6 configurations x 6 cells x 20 seed rows = 720:
5 validation, 10 test and 5 stability copies; each row with its own SFT and RL step sizes, recording
only the steps the report reads), hence ``--seeds 720``. Its RL stage is sampled GRPO by default
(``--rl-algorithm``, ``--num-generations``): every seed draws from its own rollout stream, so the
loop's single-seed runs sample exactly what the batch samples.
The loop's time is measured on ``--loop-sample`` of those seeds and scaled to all of them (every
single-seed run does the same work). Both sides are timed ``--repeats`` times, interleaved, and the
best time of each gives the speed-up (every repeat's ratio is printed too).
Both sides run on ``--threads`` torch threads (default 1; the per-seed loop's ops are too small to
use more, the vectorised run's are not). Last line: ``RESULT vectorised_speedup=<x> report_seconds=<s>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from toybench.config import reuse_freed_memory
from toybench.report import ReportConfig, run_report
from toybench.tabular import MultiAnswerBandit, ReasoningTree
from toybench.tabular.pipeline import PipelineConfig, run_method


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sweeps and the --quick report")
    ap.add_argument(
        "--seeds", type=int, default=720, help="batch for the speed-up (the map's 6 configs x 6 cells x 20)"
    )
    ap.add_argument("--rl-algorithm", choices=("grpo", "exact_pg"), default="grpo", help="the RL stage")
    ap.add_argument("--num-generations", type=int, default=16, help="GRPO's group size G")
    ap.add_argument("--no-report", action="store_true", help="skip the timed `toybench report` run")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (1: the per-op figure; `toybench report` uses torch's default)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timings of each side; the best of each is used")
    ap.add_argument("--loop-sample", type=int, default=60, help="seeds the per-seed loop is timed on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as the `toybench` entry point does; for the loop and the vectorised run alike
    rl = dict(rl_algorithm=args.rl_algorithm, num_generations=args.num_generations, num_iterations=1)
    cfg = (
        PipelineConfig(sft_steps=10, rl_steps=10, rl_lr=2.0, **rl)
        if args.quick
        else PipelineConfig(sft_steps=40, rl_steps=80, rl_lr=2.0, **rl)
    )
    method = "gift@2"

    print(
        f"# wall time of one method ({method}), SFT {cfg.sft_steps} + RL {cfg.rl_steps} steps, "
        f"{args.rl_algorithm}"
    )
    print("\n| seeds | tree V=5 H=4 (s) | bandit V=32 (s) |\n|---|---|---|")
    for S in (5, 10, 20) if not args.quick else (2, 4):
        t_tree = timed(lambda S=S: run_method(ReasoningTree(range(S), V=5, H=4), method, cfg))
        t_band = timed(lambda S=S: run_method(MultiAnswerBandit(range(S), V=32), method, cfg))
        print(f"| {S} | {t_tree:.2f} | {t_band:.2f} |")
    S = 4 if args.quick else 10
    print(f"\n| tree V | H | leaves | seconds ({S} seeds) |\n|---|---|---|---|")
    for V, H in ((3, 4), (4, 4), (5, 4), (6, 4), (4, 3), (4, 5)) if not args.quick else ((3, 3), (4, 4)):
        t = timed(lambda V=V, H=H: run_method(ReasoningTree(range(S), V=V, H=H), method, cfg))
        print(f"| {V} | {H} | {V**H} | {t:.2f} |")

    S, n = args.seeds, min(args.loop_sample, args.seeds)
    sft_lrs = torch.tensor([0.5, 2.0]).repeat_interleave(-(-S // 2))[:S]  # the map's SFT x RL grid
    rl_lrs = torch.tensor([2.0, 8.0, 32.0]).repeat(-(-S // 3))[:S]
    keep = {"sft": {cfg.sft_steps}, "rl": {cfg.rl_steps // 4, cfg.rl_steps}}  # as the map records

    escape = ReportConfig.reward_threshold  # the map also records the escape times

    def run(make, seeds, idx):
        return run_method(
            make(seeds), method, cfg, escape_threshold=escape, sft_lrs=sft_lrs[idx], rl_lrs=rl_lrs[idx],
            record_steps=keep, rollout_seeds=torch.tensor(seeds),
        )  # fmt: skip

    def tree(s):
        return ReasoningTree(s, V=5, H=4)

    def bandit(s):
        return MultiAnswerBandit(s, V=32)

    print(
        f"\n# vectorised vs per-seed loop, {S} seeds (each its own step sizes), tree V=5 H=4 and bandit V=32"
    )
    sample = range(0, S, max(1, S // n))[:n]  # spread over the lr grid
    vec, loop = [], []
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits both
        vec.append(
            timed(lambda: run(tree, list(range(S)), slice(0, S)))
            + timed(lambda: run(bandit, list(range(S)), slice(0, S)))
        )
        t = sum(timed(lambda s=s: run(tree, [s], slice(s, s + 1))) for s in sample)
        t += sum(timed(lambda s=s: run(bandit, [s], slice(s, s + 1))) for s in sample)
        loop.append(t * S / len(sample))
    for i, (v, lp) in enumerate(zip(vec, loop)):
        print(f"repeat {i + 1}: vectorised {v:.2f} s, per-seed loop {lp:.2f} s, ratio {lp / v:.1f}x")
    t_vec, t_loop = min(vec), min(loop)
    speedup = t_loop / t_vec
    print(
        f"best of {args.repeats}: vectorised {t_vec:.2f} s, per-seed loop {t_loop:.2f} s "
        f"({len(sample)} seeds timed, scaled to {S}), speed-up {speedup:.1f}x"
    )

    if args.no_report:
        print(f"RESULT vectorised_speedup={speedup:.1f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        print("\n# default `toybench report`" + (" --quick" if args.quick else ""))
        t_report = timed(lambda: run_report(ReportConfig(out=Path(tmp), quick=args.quick)))
    print(f"report wall time {t_report:.1f} s")
    print(f"RESULT vectorised_speedup={speedup:.1f} report_seconds={t_report:.1f}")


if __name__ == "__main__":
    main()
