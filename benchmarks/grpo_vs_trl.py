"""One GRPO step: ours vs TRL's GRPOTrainer, same model, prompts and group size.

Throughput = prompts * G / wall time of one step (generation + scoring + update), after a warm-up
step for each; both sides in this process, same device and dtype (CPU: fp32; CUDA: fp32 weights
with bf16 autocast, TRL's ``bf16=True``), no gradient checkpointing, no KL, best of ``--repeats``.
The model is the tiny preset unless ``--model`` names a directory (``benchmarks/llm_gpu.py`` passes
its stand-in Qwen3-0.6B).
Completions are forced to exactly ``--max-new`` tokens on both sides (``min_new_tokens`` =
``max_completion_length``: ours through the loop's ``generate`` call, TRL's through
``generation_kwargs``), so EOS cannot shorten one side; the RESULT line prints the mean completion
length each side actually produced. TRL is a benchmark-only extra (``pip install -e '.[bench]'``);
without it the script says so.

What differs between the two sides (the rest is the same: model, dtype, shapes, sampling, no KL,
one optimizer step per batch): our micro-batches are sized from the free GPU memory
(``micro_batch_size`` 0 = auto: the whole 128-sequence batch in one forward/backward on an H200, as
TRL's ``per_device_train_batch_size`` = prompts x G does); we score log-probs with the chunked
vocabulary loss (TRL: full logits of the completion); our decoding is a CUDA-graph replay of a
static-KV step (TRL: ``model.generate``); our marginal step is timed as (3 steps - 1 step) / 2 of
whole runs, TRL's as its warm steps between callbacks.

    python benchmarks/grpo_vs_trl.py --prompts 8 --group 8 --max-new 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def ours(
    model_dir: str,
    prompts: int,
    group: int,
    max_new: int,
    out: str,
    repeats: int,
    device: str = "cpu",
    warm: bool = True,
    phases: dict | None = None,
    **overrides,
) -> tuple[float, float]:
    """(samples/s, mean completion length) of our GRPO step, completions forced to ``max_new``.

    ``warm``: run one untimed step first (CUDA context, kernels, the decode graph); ``phases``, when
    given, receives the mean ``perf/*`` times of the timed run's steps after the first (generation,
    train, step); ``overrides``: other ``GRPOConfig`` fields (``micro_batch_size=8``)."""
    import llm.grpo
    from llm.config import GRPOConfig
    from llm.grpo import run_grpo
    from llm.loading import load_model, load_tokenizer

    lengths: list[int] = []

    def forced(*args, **kw):  # the loop's generate call, its completion lengths recorded
        groups = gen(*args, **kw)
        lengths.extend(len(r.response_ids) for g in groups for r in g)
        return groups

    gen, llm.grpo.generate = llm.grpo.generate, forced

    tok = load_tokenizer(model_dir)
    cfg = (
        dict(
            model=model_dir,
            device=device,
            gradient_checkpointing="off",
            n_train=4 * prompts,
            n_heldout=4,
            prompts_per_step=prompts,
            num_generations=group,
            pass_k=1,
            max_completion_length=max_new,
            min_new_tokens=max_new,  # forced length: EOS cannot shorten our side
            overwrite=True,  # --repeats rerun into the same scratch directories
            eval_every=10**6,
            ckpt_every=10**6,
            prompt_style="compact",
        )
        | overrides
    )
    if warm:
        run_grpo(GRPOConfig(**cfg, steps=1, out=out + "/w"), model=load_model(model_dir, device), tok=tok)

    def wall(steps: int) -> float:
        m = load_model(model_dir, device)
        t0 = time.perf_counter()
        run_grpo(GRPOConfig(**cfg, steps=steps, out=out + f"/o{steps}"), model=m, tok=tok)
        return time.perf_counter() - t0

    # Marginal time per step: set-up, config/checkpoint/final-model writes cost the same in both
    # runs and cancel, matching TRL's per-step timing (callbacks around one warm step).
    extra = 2
    try:
        per_step = min((wall(1 + extra) - wall(1)) / extra for _ in range(repeats))
    finally:
        llm.grpo.generate = gen
    if phases is not None:
        recs = [json.loads(x) for x in open(out + f"/o{1 + extra}/metrics.jsonl") if x.strip()][1:]
        for k in ("generation_time", "train_time", "step_time"):
            phases[k] = sum(r.get(f"perf/{k}", 0.0) for r in recs) / max(len(recs), 1)
    return prompts * group / per_step, sum(lengths) / max(len(lengths), 1)


def trl_rate(
    model_dir: str, prompts: int, group: int, max_new: int, out: str, repeats: int, device: str = "cpu"
) -> tuple[float, float]:
    """(samples/s, mean completion length) of TRL's warm GRPO steps (best of ``repeats``)."""
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
        max_steps=1 + repeats,
        generation_kwargs={"min_new_tokens": max_new},
        learning_rate=1e-4,
        logging_steps=1,
        report_to=[],
        use_cpu=device == "cpu",
        gradient_checkpointing=False,
        save_strategy="no",
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        disable_tqdm=True,
        bf16=device != "cpu",
    )
    trainer = GRPOTrainer(
        model=load_model(model_dir, device),
        reward_funcs=reward,
        args=args,
        train_dataset=ds,
        processing_class=load_tokenizer(model_dir),
    )
    times, lengths = [], []

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    trainer.add_callback(StepTimer())
    trainer.train()
    dt = min(times[i + 1] - times[i] for i in range(2, len(times), 2))  # warm steps (not the first)
    return prompts * group / dt, sum(lengths) / max(len(lengths), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=64, help="completion length, forced on both sides")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings per side")
    ap.add_argument("--pretrain-steps", type=int, default=1500, help="tiny model (cached)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="", help="a model directory (default: the tiny preset)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from llm.tiny import model_path

    model_dir = a.model or model_path(
        "", True, __import__("llm.config").config.DEFAULT_CACHE, a.pretrain_steps
    )
    dev = a.device
    with tempfile.TemporaryDirectory() as out:
        r_ours, len_ours = ours(model_dir, a.prompts, a.group, a.max_new, out, a.repeats, dev)
        print(f"ours: {r_ours:.1f} samples/s  mean completion length {len_ours:.1f}", flush=True)
        try:
            r_trl, len_trl = trl_rate(model_dir, a.prompts, a.group, a.max_new, out, a.repeats, dev)
        except ImportError as e:
            print(f"TRL is not installed ({e}); install the benchmark extra: pip install trl")
            print(f"RESULT grpo_speedup_vs_trl=nan mean_completion_len={len_ours:.1f}")
            return
        except Exception as e:  # noqa: BLE001 -- report TRL API drift clearly instead of a traceback
            print(f"TRL GRPOTrainer failed: {type(e).__name__}: {e}")
            print(f"RESULT grpo_speedup_vs_trl=nan mean_completion_len={len_ours:.1f}")
            return
    print(f"trl:  {r_trl:.1f} samples/s  mean completion length {len_trl:.1f}")
    prec = "CPU fp32" if dev == "cpu" else f"{dev} bf16 autocast"
    print(f"(prompts={a.prompts} G={a.group} max_new={a.max_new}, {prec}, threads={a.threads})")
    print(
        f"RESULT grpo_speedup_vs_trl={r_ours / r_trl:.2f} mean_completion_len={len_ours:.1f}"
        f" trl_mean_completion_len={len_trl:.1f}"
    )


if __name__ == "__main__":
    main()
