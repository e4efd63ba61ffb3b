"""One GRPO step on the tiny Qwen3: ours vs TRL's GRPOTrainer, same model, prompts and group size.

Throughput = prompts * G / wall time of one step (generation + scoring + update), after a warm-up
step for each. TRL is a benchmark-only extra (``pip install trl``); without it the script says so.

    python benchmarks/grpo_vs_trl.py --prompts 8 --group 8
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def ours(model_dir: str, prompts: int, group: int, max_new: int, out: str) -> float:
    from llm.config import GRPOConfig
    from llm.grpo import run_grpo
    from llm.loading import load_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    cfg = dict(
        model=model_dir,
        device="cpu",
        n_train=4 * prompts,
        n_heldout=4,
        prompts_per_step=prompts,
        num_generations=group,
        pass_k=1,
        max_completion_length=max_new,
        eval_every=10**6,
        ckpt_every=10**6,
        prompt_style="compact",
    )
    run_grpo(
        GRPOConfig(**cfg, steps=1, out=out + "/w"), model=load_model(model_dir, "cpu"), tok=tok
    )  # warm-up

    def wall(steps: int) -> float:
        m = load_model(model_dir, "cpu")
        t0 = time.perf_counter()
        run_grpo(GRPOConfig(**cfg, steps=steps, out=out + f"/o{steps}"), model=m, tok=tok)
        return time.perf_counter() - t0

    # Marginal time per step: set-up, config/checkpoint/final-model writes cost the same in both
    # runs and cancel, matching TRL's per-step timing (callbacks around one warm step).
    extra = 4
    per_step = (wall(1 + extra) - wall(1)) / extra
    return prompts * group / per_step


def trl_rate(model_dir: str, prompts: int, group: int, max_new: int, out: str) -> float:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from llm.data import arith_splits
    from llm.loading import load_model, load_tokenizer

    exs = arith_splits(0, 4, 4 * prompts)["eval"][: 2 * prompts]
    ds = Dataset.from_list([{"prompt": list(e.messages), "idx": i} for i, e in enumerate(exs)])

    def reward(completions, idx, **_):
        return [
            exs[i].reward(c[0]["content"] if isinstance(c, list) else c) for c, i in zip(completions, idx)
        ]

    args = GRPOConfig(
        output_dir=out + "/trl",
        per_device_train_batch_size=prompts * group,
        num_generations=group,
        max_completion_length=max_new,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        disable_tqdm=True,
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=load_model(model_dir, "cpu"),
        reward_funcs=reward,
        args=args,
        train_dataset=ds,
        processing_class=load_tokenizer(model_dir),
    )
    times = []

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    trainer.add_callback(StepTimer())
    trainer.train()
    dt = times[-1] - times[-2]  # the second (warm) step
    return prompts * group / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=16)
    ap.add_argument("--pretrain-steps", type=int, default=1500, help="tiny model (cached)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from llm.loading import model_path

    model_dir = model_path("", True, __import__("llm.config").config.DEFAULT_CACHE, a.pretrain_steps)
    with tempfile.TemporaryDirectory() as out:
        r_ours = ours(model_dir, a.prompts, a.group, a.max_new, out)
        print(f"ours: {r_ours:.1f} samples/s")
        try:
            r_trl = trl_rate(model_dir, a.prompts, a.group, a.max_new, out)
        except ImportError as e:
            print(f"TRL is not installed ({e}); install the benchmark extra: pip install trl")
            print("RESULT grpo_speedup_vs_trl=nan")
            return
        except Exception as e:  # noqa: BLE001 -- report TRL API drift clearly instead of a traceback
            print(f"TRL GRPOTrainer failed: {type(e).__name__}: {e}")
            print("RESULT grpo_speedup_vs_trl=nan")
            return
    print(f"trl:  {r_trl:.1f} samples/s   (prompts={a.prompts} G={a.group} max_new={a.max_new}, CPU)")
    print(f"RESULT grpo_speedup_vs_trl={r_ours / r_trl:.2f}")


if __name__ == "__main__":
    main()
