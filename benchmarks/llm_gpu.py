"""The prepared GPU check of ``llm/`` at Qwen3-0.6B size: one script, ~6 minutes on one H200.

Weights cannot be downloaded, so it first builds a stand-in Qwen3-0.6B directory: the real
configuration (28 layers, d = 1024, 16/8 heads, V = 151,936, tied embeddings; 0.596B parameters),
random weights saved in bf16 like the hub checkpoint, and the tiny preset's character tokenizer (the
model's vocabulary is wider than the tokenizer, as Qwen3's own is). Runs use ``--dtype auto`` (fp32
master weights, bf16 autocast). Sections, each printing ``RESULT`` lines (a table of them comes last):

  decode    OUR generator, ``llm.rollout.HFGenerator`` (static KV cache, decode step replayed as a
            CUDA graph; and the same loop eager), at batch 16, 128 and 512: ms per decode step and
            completion tokens/s (lengths forced); HF ``model.generate`` beside it at 16 and 128.
  sft       one SFT step (forward + backward + AdamW) on batch x seq tokens (no padding, so SDPA
            takes its causal kernel without a mask): tokens/s, MFU (the PaLM / nanoGPT count,
            :func:`flops_per_token`, over --peak-tflops) and peak memory, for sft and gift@5,
            loss_impl chunked / fused, checkpointing on / off, then each option of
            ``llm.train.prepare_model`` (Liger kernels + its fused linear cross-entropy,
            torch.compile, both) at --batch and at each --sft-batches size.
  grpo      one GRPO step, 16 prompts x 8 samples x 128 forced tokens, no KL, no checkpointing:
            ours (micro-batches auto, and fixed at each --grpo-micro size, with the loop's own
            generation / train split) vs TRL's GRPOTrainer (``benchmarks/grpo_vs_trl.py``; skipped
            without trl).
  defaults  the default ``llm pipeline``'s costs at its default shapes: a few SFT steps (gift@5,
            batch 16 of the default data, probes and a full checkpoint included), a few GRPO steps
            (16 x 8 completions up to 512 tokens), one evaluation (16 samples per prompt), and the
            whole default pipeline's time extrapolated from them (RESULT ``defaults[total]``, with
            its formula).
  pipeline  ``llm pipeline`` on the stand-in (``gift@5 curio none``, 8 SFT steps of 16, 3 GRPO steps
            of 16 x 8 samples, completions up to 512 tokens as by default; random weights rarely
            emit an EOS, so they run to the limit): wall time, peak GPU memory and disk per stage.
            Last, so the default --deadline-s leaves it out on one H200 (``--only pipeline``).

    python benchmarks/llm_gpu.py                       # everything in time (~6 minutes on an H200)
    python benchmarks/llm_gpu.py --only decode sft     # some sections
    python benchmarks/llm_gpu.py --cpu-smoke           # every code path on CPU at toy shapes

A section that would start after ``--deadline-s`` seconds, or with less than its rough cost
(:data:`COST`) left, is skipped and says so. Without CUDA (and without ``--cpu-smoke``) it prints a
message and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's llm/, not an installed one

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
#: --cpu-smoke: the same code paths on a model a CPU runs in seconds
SMOKE = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16)
#: rough seconds per section on an H200: --deadline-s skips a section with less time left, and the
#: sft section skips its remaining variants once it has used its share
COST = {"decode": 35, "sft": 100, "grpo": 75, "defaults": 90, "pipeline": 150}

RESULTS: list[str] = []


def result(line: str) -> None:
    """Print a ``RESULT`` line now and keep it for the closing table."""
    RESULTS.append(line)
    print("RESULT " + line, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib(reset: bool = True) -> float:
    """Peak allocated CUDA memory since the last reset (0 on CPU), then reset."""
    if not torch.cuda.is_available():
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    if reset:
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


def disk_gb(path: Path) -> float:
    """Bytes on disk under ``path`` (a hard-linked file counted once, as ``du`` does), in GB."""
    files = {
        (s.st_dev, s.st_ino): s.st_size for f in Path(path).rglob("*") if f.is_file() for s in [f.stat()]
    }
    return sum(files.values()) / 1e9


def build_standin(path: Path, smoke: bool) -> Path:
    """The stand-in Qwen3-0.6B directory: real shapes, random bf16 weights, the tiny tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from llm.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    config = Qwen3Config(
        **(QWEN3_06B | (SMOKE if smoke else {})),
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"stand-in: {path} ({n / 1e9:.3f}B parameters, {disk_gb(path):.2f} GB on disk, bf16)", flush=True)
    return path


def bench_decode(model_dir: Path, a) -> None:
    """Our generator (graph and eager) and HF ``generate``: ms per decode step, tokens/s."""
    from llm.loading import load_model, precision
    from llm.rollout import HFGenerator, Sampling

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, prec = load_model(str(model_dir), dev), precision("auto", dev)
    model.eval()
    V, L, P = model.config.vocab_size, a.gen_tokens, 64
    s = Sampling(L, min_new_tokens=L, eos_token_ids=(model.config.eos_token_id,), pad_token_id=0)
    for B in a.gen_batches:
        prompts = torch.randint(0, V, (B, P)).tolist()
        engines = [("graph", True), ("eager", False)] if dev == "cuda" else [("eager", False)]
        for name, graph in engines:
            if name == "eager" and B > 128:
                continue  # launch-bound: its time per step does not depend on the batch
            gen = HFGenerator(model, batch_size=B, graph=graph)
            with prec.autocast():
                peak_gib()
                dt = timed(lambda gen=gen, prompts=prompts: gen.generate(prompts, 1, s), 1)
            result(
                f"decode[ours,{name}] batch={B} new_tokens={L} step_ms={1e3 * dt / L:.2f} "
                f"tokens_per_s={B * L / dt:.0f} peak_gib={peak_gib():.2f}"
            )
        if B > 128:
            continue
        ids = torch.tensor(prompts, device=dev)
        kw = dict(max_new_tokens=L, min_new_tokens=L, do_sample=True, top_k=0, top_p=1.0, pad_token_id=0)

        def hf(ids=ids, kw=kw, model=model):
            with torch.no_grad(), prec.autocast():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kw)

        dt = timed(hf, 1)
        result(
            f"decode[hf.generate] batch={B} new_tokens={L} step_ms={1e3 * dt / L:.2f} "
            f"tokens_per_s={B * L / dt:.0f}"
        )
    del model
    _free()


def flops_per_token(model, seq: int) -> float:
    """Training FLOPs per token, the PaLM / nanoGPT count: 6 N (N = parameters, a tied embedding
    once: it is the output head's product) + 12 L H d_h T (attention scores and values, forward and
    backward, at sequence length T; causal masking not halved)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    return 6 * n + 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq


#: (prepare_model keywords, loss_impl) of each SFT option: ``liger`` as ``llm sft --use-liger-kernel``
#: runs it (Liger's layer kernels and, for the NLL methods, its fused linear cross-entropy as the
#: loss), ``liger-layers`` its layer kernels with our chunked loss, ``liger+compile`` compiled layers
#: with Liger's loss (the layers are compiled, not patched: ``llm.train.prepare_model``)
OPTIONS = {
    "liger": (dict(liger=True), "liger"),
    "liger-layers": (dict(liger=True), "chunked"),
    "compile": (dict(torch_compile=True), "chunked"),
    "liger+compile": (dict(liger=True, torch_compile=True), "liger"),
}


def sft_variants(a) -> list[tuple[str, str, str, dict, int]]:
    """(method, loss_impl, label, prepare_model kwargs, sequences per step): the plain paths at
    ``--batch``, each option of ``llm.train.prepare_model`` at ``--batch``, then the options again at
    every ``--sft-batches`` size (MFU vs tokens per step)."""
    B = a.batch
    out = [
        ("sft", "chunked", "checkpointing", dict(checkpointing=True), B),
        ("sft", "chunked", "plain", dict(checkpointing=False), B),
        ("sft", "fused", "plain", dict(checkpointing=False), B),
        ("gift@5", "chunked", "plain", dict(checkpointing=False), B),
        ("gift@5", "fused", "plain", dict(checkpointing=False), B),
    ]
    have_liger = importlib.util.find_spec("liger_kernel") is not None
    for label, (kw, impl) in OPTIONS.items():
        if a.cpu_smoke or ("liger" in label and not have_liger):
            print(f"sft: {label!r} skipped (no liger_kernel, or --cpu-smoke: inductor compiles for minutes)")
            continue
        out += [("sft", impl, label, dict(checkpointing=False, **kw), b) for b in [B, *a.sft_batches]]
    return out


def bench_sft(model_dir: Path, a) -> None:
    """One SFT step per variant: tokens/s, MFU, peak memory."""
    from llm.data import collate
    from llm.loading import load_model, precision
    from llm.scoring import sft_token_loss
    from llm.train import make_optimizer, prepare_model

    if not a.cpu_smoke:  # every compiled variant reuses the layer graph (dynamic shapes): no recompiles
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    prec = precision("auto", dev)
    V = 4096 if a.cpu_smoke else 151_936
    for method, impl, label, kw, B in sft_variants(a):
        if a.sft_labels and label not in a.sft_labels:
            continue
        name = f"sft[{method},{impl},{label}] tokens={B}x{a.seq}"
        if time.perf_counter() > a.section_end:
            result(f"{name} skipped: the section's time share is used")
            continue
        seqs = [(torch.randint(0, V, (a.seq,)).tolist(), [0] * 64 + [1] * (a.seq - 64)) for _ in range(B)]
        batch = {k: v.to(dev) for k, v in collate(seqs, 0).items()}  # no padding: SDPA's causal path
        n_tok = batch["loss_mask"].sum()  # token_mean: the timing does not depend on the reduction
        model = prepare_model(load_model(str(model_dir), dev), prec, **kw)
        opt, _ = make_optimizer(model, 1e-5, 100, 0, 1.0)
        aux = [load_model(str(model_dir), dev).eval().requires_grad_(False)] if method != "sft" else []

        def step(model=model, opt=opt, aux=aux, method=method, impl=impl, batch=batch, n_tok=n_tok):
            model.train()
            with prec.autocast():
                loss = sft_token_loss(model, batch, method, aux, a.chunk, impl).sum() / n_tok
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        peak_gib()
        try:
            dt = timed(step, a.reps)
        except Exception as e:  # noqa: BLE001 -- one option failing must not hide the others' numbers
            traceback.print_exc()
            result(f"{name} failed: {type(e).__name__}: {str(e)[:120]}")
            continue
        tps = B * a.seq / dt
        mfu = tps * flops_per_token(model, a.seq) / (a.peak_tflops * 1e12)
        result(f"{name} step_s={dt:.3f} tokens_per_s={tps:.0f} mfu={mfu:.3f} peak_gib={peak_gib():.2f}")
        del model, opt, aux
        _free()


def bench_grpo(model_dir: Path, a) -> None:
    """Ours (micro-batches auto, and each ``--grpo-micro`` fixed size) vs TRL 1.16 on one GRPO step
    (``benchmarks/grpo_vs_trl.py``), with our step's phase split from its ``perf/*`` metrics."""
    spec = importlib.util.spec_from_file_location("grpo_vs_trl", ROOT / "benchmarks" / "grpo_vs_trl.py")
    gvt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gvt)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    P, G, L = a.grpo_prompts, a.grpo_group, a.grpo_tokens
    shape = f"prompts={P} G={G} tokens={L}"
    with tempfile.TemporaryDirectory(dir=a.work) as out:
        rates = {}
        for i, mb in enumerate([0, *a.grpo_micro]):
            if i and time.perf_counter() > a.section_end - 30:
                result(f"grpo[ours,micro={mb}] skipped: the section's time share is used")
                continue
            ph: dict = {}
            r, n = gvt.ours(str(model_dir), P, G, L, out, 1, dev, warm=i == 0, phases=ph, micro_batch_size=mb)
            rates[mb] = r
            label = f"ours,micro={mb}" if mb else "ours"
            result(
                f"grpo[{label}] {shape} step_s={P * G / r:.2f} mean_len={n:.0f} "
                f"(in the loop: generation {ph['generation_time']:.2f} s, train {ph['train_time']:.2f} s, "
                f"step {ph['step_time']:.2f} s)"
            )
        if importlib.util.find_spec("trl") is None:
            result("grpo[trl] skipped: trl is not importable")
            return
        try:
            r_trl, len_trl = gvt.trl_rate(str(model_dir), P, G, L, out, 1, dev)
        except Exception as e:  # noqa: BLE001 -- report TRL API drift instead of a traceback
            result(f"grpo[trl] failed: {type(e).__name__}: {str(e)[:160]}")
            return
    vs = " ".join(f"ours_micro_{mb or 'auto'}_speedup={r / r_trl:.2f}x" for mb, r in rates.items())
    result(f"grpo[trl] {shape} step_s={P * G / r_trl:.2f} mean_len={len_trl:.0f} {vs}")
    _free()


def _save_timer():
    """Wrap ``llm.train.save_checkpoint`` (the step loop's saves): returns the list it appends
    ``(seconds, full, GB on disk)`` to (full = with optimizer state) and the undo."""
    import llm.train as tr

    calls, real = [], tr.save_checkpoint

    def wrapped(root, step, model, optimizer, *args, **kw):
        t0 = time.perf_counter()
        path = real(root, step, model, optimizer, *args, **kw)
        sync()
        calls.append((time.perf_counter() - t0, optimizer is not None, disk_gb(path)))
        return path

    tr.save_checkpoint = wrapped
    return calls, lambda: setattr(tr, "save_checkpoint", real)


def _stage(run, cfg, calls: list) -> dict:
    """Run one stage: wall seconds, its ``metrics.jsonl`` records, the saves, disk (GB), peak (GiB)."""
    calls.clear()
    peak_gib()
    t0 = time.perf_counter()
    run(cfg)
    sync()
    wall = time.perf_counter() - t0
    _free()  # the stage's model, optimizer and decode graph, before the next stage sizes its batches
    out = Path(cfg.out)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res = dict(wall=wall, recs=recs, saves=list(calls), disk=disk_gb(out), peak=peak_gib())
    shutil.rmtree(out, ignore_errors=True)
    return res


def _costs(r: dict, probe_key: str) -> dict:
    """Per-step costs of a short stage run: ``step`` (median of the steps after the first without a
    probe), ``probe`` (what a probe step adds), ``save`` (a full checkpoint), ``once`` (the rest:
    set-up, the first step's warm-up, the last step's lean save and ``final/``)."""
    t = [x["perf/step_time"] for x in r["recs"]]
    plain = [x["perf/step_time"] for x in r["recs"][1:] if probe_key not in x] or t[1:] or t
    step = statistics.median(plain)
    probes = [x["perf/step_time"] - step for x in r["recs"] if probe_key in x]
    full = [s for s, is_full, _ in r["saves"] if is_full]
    save = statistics.mean(full) if full else 0.0
    probe = statistics.mean(probes) if probes else 0.0
    once = r["wall"] - step * len(t) - probe * len(probes) - save * len(full)
    return dict(step=step, probe=probe, save=save, once=once, n_probe=len(probes), n_save=len(full))


def bench_defaults(model_dir: Path, a) -> None:
    """The default ``llm pipeline`` on the stand-in, measured at its default shapes: SFT steps
    (gift@5, batch 16 of the default data), GRPO steps (16 prompts x 8, up to 512 tokens), one
    evaluation (its default prompts x 16 samples), probes and saves; then the whole default
    pipeline's time extrapolated from them (a RESULT line with the formula)."""
    from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig, resolve, stage_config
    from llm.evaluate import run_eval
    from llm.grpo import run_grpo
    from llm.sft import run_sft
    from toybench.methods import Method

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    root = Path(a.work) / "defaults"
    small = dict(max_completion_length=8, n_heldout=16) if a.cpu_smoke else {}
    cfg = resolve(PipelineConfig(model=str(model_dir), device=dev, out=str(root), **small))
    S, G, m = a.default_sft_steps, a.default_grpo_steps, "gift@5"
    calls, undo = _save_timer()
    try:
        kw = dict(model=str(model_dir), overwrite=True)
        sft = stage_config(SFTConfig, cfg, cfg.sft, out=str(root / "sft"), method=m, steps=S, **kw)
        sft = dataclasses.replace(sft, eval_every=max(1, S // 2), ckpt_every=max(1, S // 2))
        r_sft = _stage(run_sft, sft, calls)
        grpo = stage_config(GRPOConfig, cfg, cfg.grpo, out=str(root / "grpo"), steps=G, **kw)
        r_grpo = _stage(run_grpo, dataclasses.replace(grpo, ckpt_every=max(1, G - 1)), calls)
        ev = stage_config(EvalConfig, cfg, out=str(root / "eval"), n_samples=cfg.n_samples, ks=cfg.ks, **kw)
        peak_gib()
        t0 = time.perf_counter()
        run_eval(ev)
        sync()
        t_eval, eval_peak = time.perf_counter() - t0, peak_gib()
    finally:
        undo()
    _report_defaults(cfg, r_sft, r_grpo, t_eval, eval_peak, calls, Method)
    shutil.rmtree(root, ignore_errors=True)


def _report_defaults(cfg, r_sft: dict, r_grpo: dict, t_eval: float, eval_peak: float, calls, Method) -> None:
    """RESULT lines of :func:`bench_defaults` and the extrapolated total of the default pipeline."""
    cs, cg = _costs(r_sft, "heldout/reward"), _costs(r_grpo, "__none__")
    tok = statistics.median(x["perf/train_tokens_per_s"] * x["perf/train_time"] for x in r_sft["recs"])
    full_gb = max((gb for _, is_full, gb in r_sft["saves"] + r_grpo["saves"] if is_full), default=0.0)
    g = r_grpo["recs"][-1]
    result(
        f"defaults[sft] gift@5 batch={cfg.sft.batch_size} tokens_per_step={tok:.0f} step_s={cs['step']:.3f} "
        f"probe_s={cs['probe']:.1f} full_save_s={cs['save']:.1f} once_s={cs['once']:.1f} "
        f"peak_gib={r_sft['peak']:.1f} final_disk_gb={r_sft['disk']:.3f} full_ckpt_gb={full_gb:.3f} "
        f"(measured: {cs['n_save']} full saves)"
    )
    result(
        f"defaults[grpo] {cfg.grpo.prompts_per_step}x{cfg.grpo.num_generations} "
        f"up_to={cfg.max_completion_length} step_s={cg['step']:.2f} (generation "
        f"{g.get('perf/generation_time', 0):.2f} s, train {g.get('perf/train_time', 0):.2f} s; mean_len "
        f"{g.get('grpo/completions/mean_length', 0):.0f}) full_save_s={cg['save']:.1f} "
        f"once_s={cg['once']:.1f} peak_gib={r_grpo['peak']:.1f} final_disk_gb={r_grpo['disk']:.3f}"
    )
    result(f"defaults[eval] n_samples={cfg.n_samples} s={t_eval:.1f} peak_gib={eval_peak:.1f}")
    S, es, ks = cfg.sft.steps, cfg.sft.eval_every, cfg.sft.ckpt_every
    Gn, kg = cfg.grpo.steps, cfg.grpo.ckpt_every
    sft_stage = S * cs["step"] + -(-S // es) * cs["probe"] + (S - 1) // ks * cs["save"] + cs["once"]
    grpo_stage = Gn * cg["step"] + (Gn - 1) // kg * cg["save"] + cg["once"]
    n_m = len(cfg.methods)
    n_sft = sum(Method.parse(x).kind != "none" for x in cfg.methods)
    total = n_sft * sft_stage + n_m * grpo_stage + (1 + n_sft + n_m) * t_eval
    result(
        f"defaults[total] {n_m} methods: {n_sft} x SFT stage ({S} x {cs['step']:.2f} s + {-(-S // es)} probes"
        f" x {cs['probe']:.1f} + {(S - 1) // ks} saves x {cs['save']:.1f} + {cs['once']:.0f} = "
        f"{sft_stage / 60:.1f} min) + {n_m} x GRPO stage ({Gn} x {cg['step']:.2f} s + {(Gn - 1) // kg} saves"
        f" x {cg['save']:.1f} + {cg['once']:.0f} = {grpo_stage / 60:.1f} min) + {1 + n_sft + n_m} evals x "
        f"{t_eval:.0f} s = {total / 3600:.2f} h"
    )


def bench_pipeline(model_dir: Path, a) -> None:
    """``llm pipeline`` on the stand-in: time, peak memory and disk of every stage call."""
    import llm.pipeline
    from llm.cli import main as llm_main

    stages: list[tuple[str, float, float, str]] = []
    for name in ("run_sft", "run_grpo", "run_eval"):
        real = getattr(llm.pipeline, name)

        def wrapped(cfg, *args, _real=real, _name=name, **kw):
            peak_gib()
            t0 = time.perf_counter()
            out = _real(cfg, *args, **kw)
            sync()
            stages.append((_name[4:], time.perf_counter() - t0, peak_gib(), cfg.out))
            return out

        setattr(llm.pipeline, name, wrapped)
    out = Path(a.work) / "pipeline"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    args = ["pipeline", "--model", str(model_dir), "--device", dev, "--out", str(out), "--overwrite"]
    args += [
        "--methods",
        *a.methods,
        "--n-train",
        "64",
        "--n-heldout",
        "16",
        "--n-samples",
        "4",
        "--ks",
        "1",
        "4",
    ]
    args += ["--max-completion-length", str(a.pipeline_tokens), "--sft.steps", "8", "--sft.batch-size", "16"]
    args += ["--grpo.steps", "3", "--grpo.prompts-per-step", str(a.grpo_prompts)]
    args += ["--grpo.num-generations", str(a.grpo_group), "--grpo.pass-k", str(min(4, a.grpo_group))]
    args += ["--sft.eval-every", "4", "--grpo.eval-every", "2"]
    t0 = time.perf_counter()
    rc = llm_main(args)
    total = time.perf_counter() - t0
    for stage, dt, peak, where in stages:
        rel = Path(where).relative_to(out)
        result(f"pipeline[{rel}] {stage} s={dt:.1f} peak_gib={peak:.1f} disk_gb={disk_gb(Path(where)):.3f}")
    result(f"pipeline[total] rc={rc} methods={' '.join(a.methods)} s={total:.1f} disk_gb={disk_gb(out):.2f}")
    shutil.rmtree(out, ignore_errors=True)


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=list(COST), choices=list(COST), help="sections to run")
    ap.add_argument("--deadline-s", type=float, default=380, help="skip sections that would start later")
    ap.add_argument("--work", default="", help="scratch directory (default: a temporary one)")
    ap.add_argument("--gen-batches", type=int, nargs="+", default=[16, 128, 512], help="decode batch sizes")
    ap.add_argument("--gen-tokens", type=int, default=128, help="completion tokens per sample (forced)")
    ap.add_argument("--batch", type=int, default=8, help="SFT sequences per step")
    ap.add_argument("--seq", type=int, default=1024, help="SFT tokens per sequence")
    ap.add_argument("--chunk", type=int, default=4096, help="chunk_size of the SFT losses")
    ap.add_argument("--reps", type=int, default=3, help="timed SFT steps per variant")
    ap.add_argument("--sft-labels", nargs="*", default=[], help="only these SFT variants (e.g. liger plain)")
    ap.add_argument(
        "--sft-batches", type=int, nargs="*", default=[16, 32], help="larger SFT batches for the options"
    )
    ap.add_argument("--grpo-prompts", type=int, default=16, help="GRPO prompts per step")
    ap.add_argument("--grpo-group", type=int, default=8, help="GRPO samples per prompt")
    ap.add_argument("--grpo-tokens", type=int, default=128, help="GRPO completion tokens (forced)")
    ap.add_argument(
        "--grpo-micro", type=int, nargs="*", default=[8], help="fixed micro-batch sizes timed beside auto"
    )
    ap.add_argument("--default-sft-steps", type=int, default=8, help="defaults: SFT steps measured")
    ap.add_argument("--default-grpo-steps", type=int, default=3, help="defaults: GRPO steps measured")
    ap.add_argument("--pipeline-tokens", type=int, default=512, help="pipeline max completion (real default)")
    ap.add_argument("--methods", nargs="+", default=["gift@5", "curio", "none"], help="pipeline methods")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H200 SXM: 989)")
    ap.add_argument("--cpu-smoke", action="store_true", help="every code path on CPU at toy shapes")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        a.gen_batches, a.gen_tokens, a.batch, a.seq, a.chunk, a.reps = [4], 8, 2, 128, 512, 1
        a.grpo_prompts, a.grpo_group, a.grpo_tokens, a.methods = 2, 2, 8, ["gift@5", "none"]
        a.sft_batches, a.grpo_micro, a.default_sft_steps, a.default_grpo_steps = [4], [1], 4, 2
        a.pipeline_tokens = 8
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if not torch.cuda.is_available() and not a.cpu_smoke:
        print("benchmarks/llm_gpu.py: no CUDA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=a.work or None) as work:
        a.work = work
        model_dir = build_standin(Path(work) / "qwen3-0.6b-standin", a.cpu_smoke)
        for name in a.only:
            left = a.deadline_s - (time.perf_counter() - t0)
            if left < COST[name] * (0.05 if a.cpu_smoke else 1):
                result(f"{name} skipped: {left:.0f} s left of --deadline-s {a.deadline_s:.0f}")
                continue
            s0 = time.perf_counter()
            a.section_end = s0 + COST[name]
            try:
                globals()[f"bench_{name}"](model_dir, a)
            except Exception as e:  # noqa: BLE001 -- one broken section must not hide the others
                traceback.print_exc()
                result(f"{name} failed: {type(e).__name__}: {str(e)[:160]}")
                _free()
            print(f"[{name}: {time.perf_counter() - s0:.0f} s]", flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke shapes)"
    print(f"\nRESULT table: {gpu}, torch {torch.__version__}, {time.perf_counter() - t0:.0f} s in all")
    for line in RESULTS:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
