# Source of notebooks/05_to_the_llm.ipynb (percent format; build with `python scripts/make_notebooks.py`).

# %% [markdown]
# # 05 · The same losses on a tiny transformer and on Qwen3
#
# **Background.** Notebooks 01-04 used a softmax over a handful of answers, where everything is exact. A
# language model is the same object repeated along a sequence: at every position $t$ of a response it outputs
# logits $z_t$ over a vocabulary of size $V$, and each SFT method of this project is a *per-token* loss of
# those logits. That is why the project writes every loss once (`toybench.losses`, shape contract
# `logits [B, T, V] -> [B, T]`) and reuses it unchanged at four scales:
#
# | scale | model | what changes |
# |---|---|---|
# | bandit / token MDP | tabular softmax | $T = 1$ or the horizon; exact expectations |
# | tiny transformer (`toybench.tiny`) | nanoGPT-size causal transformer, character tokens | sampled rollouts, GRPO |
# | LLM (`llm`) | Qwen3-0.6B (any HF causal LM), $V = 151{,}936$ | logits built **chunk by chunk** |
#
# This notebook runs the losses on a real (tiny) sequence model, shows *which* tokens the CurioSFT temperature
# heats up, checks that the chunked LLM computation equals the plain one, runs the `llm` pipeline end to end
# on a tiny Qwen3-architecture model, and says how to run it on Qwen3-0.6B on a GPU.
#
# *Budgets here are smoke-test sized* (the notebook must run in seconds on a CPU): the pipelines run, but
# their rewards are near zero and say nothing about which method is better. The real comparisons are
# `toybench report --scale transformer` (CPU, minutes) and `python -m llm pipeline` (GPU).

# %% [markdown]
# ## Key equations
#
# For a response $y_{1:T}$ to prompt $x$ with mask $m_t$ (1 on response tokens, 0 on prompt/padding):
# $$\mathcal{L} = \mathrm{reduce}\big(\ell(z_{1:T}, y_{1:T}),\ m\big), \qquad
# \mathrm{reduce}_{\text{token\_mean}} = \frac{\sum_t m_t\,\ell_t}{\sum_t m_t},$$
# with $\ell_t$ any per-token loss of notebooks 01-04 (SFT, entropy-SFT, GIFT, CurioSFT, PEAR-weighted SFT, DFT).
# At $V = 151{,}936$ the logits $z = h W^\top$ of 8,192 tokens take $8192 \cdot 151936 \cdot 4$ bytes $\approx 5$ GB in
# float32, so `llm` computes $\ell_t$ on chunks of rows of $h$ and recomputes each chunk's logits in backward.

# %%
import contextlib
import io
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, Markdown, display

from toybench import losses, metrics
from toybench.tiny.model import completion_logprobs
from toybench.tiny import prepare, quick_config, run_method
from toybench.tiny.data import TOK

torch.set_num_threads(1)
torch.manual_seed(0)
pd.set_option("display.precision", 3)
work = Path(tempfile.mkdtemp(prefix="nb05_"))  # every file this notebook writes goes here

# %% [markdown]
# ## 1. The tiny transformer
#
# The task (`toybench.tasks.arith`): given a few numbers and a target, write an arithmetic expression that hits
# the target; a verifier checks it. Several expressions are correct, the expert demonstrates one. `prepare`
# builds the data splits and pretrains a small base model (here a 1-layer, 32-wide model for only 60 steps, cached
# in a temporary folder).

# %%
cfg = quick_config(methods=("sft", "gift@3"), pretrain_steps=60)
t0 = time.perf_counter()
setup = prepare(cfg, cache_dir=work / "tiny_cache", progress=False)
print(f"base model ready in {time.perf_counter() - t0:.1f} s; pretraining loss {setup.base_info['final_loss']:.3f}")
prompt, comp, mask = setup.sft_data.batch(torch.arange(4))
print("a demonstration:", repr(TOK.decode(prompt[0].tolist())), "->", repr(TOK.decode(comp[0].tolist())))

# %% [markdown]
# ### Every loss, on the same logits
#
# One forward pass of the base model on four demonstrations gives `logits [B, N, V]`. Each SFT method of the
# project is one call to `toybench.losses` on them, reduced over the response tokens with the same `reduce`.

# %%
with torch.no_grad():
    logp, logits = completion_logprobs(setup.base, prompt, comp)  # (B, N), (B, N, V)
tau = losses.entropy_guided_temperature(logits)  # (B, N) CurioSFT teacher temperature
per_token = {
    "sft": losses.sft_loss(logits, comp),
    "entropy_sft (0.1)": losses.entropy_sft_loss(logits, comp, coef=0.1),
    "gift (beta = 3)": losses.gift_loss(logits, comp, logits, beta=3.0),
    "curio": losses.curio_loss(logits, comp, logits, tau),
    "dft": losses.dft_loss(logits, comp),
    "pear_token x sft": losses.pear_weights(logp, logp, mask) * losses.sft_loss(logits, comp),
}
pd.Series({k: losses.reduce(v, mask).item() for k, v in per_token.items()}, name="token_mean loss at the base model")

# %% [markdown]
# **What to notice.** At the base model itself, GIFT's loss is lower than SFT's (its target already contains the
# base) and PEAR with $\pi_\beta = \pi_\theta$ is SFT times powers of $\gamma \approx 1$. Same tensors, same
# reduction, different targets and weights.

# %% [markdown]
# ### Which tokens are "reasoning" tokens?
#
# Per-token entropy of the base model along one demonstration, and the CurioSFT teacher temperature it implies.
# In a well-trained model, choices (which number, which operator) have high entropy and forced characters (the end
# token once the target is reached) low entropy. This base is barely trained (60 steps), so most positions are
# still uncertain; compare the end token with the choices.

# %%
row = 0
n = int(mask[row].sum())
chars = [TOK.decode([i]) or "<eos>" for i in comp[row, :n].tolist()]
H_tok = metrics.entropy(logits[row, :n])
fig, ax = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
ax[0].bar(range(n), H_tok.numpy())
ax[0].axhline(1.2, ls="--", color="k", label="CurioSFT entropy pivot")
ax[0].set_ylabel("entropy (nats)")
ax[0].legend()
ax[1].bar(range(n), tau[row, :n].numpy(), color="C1")
ax[1].set(ylabel=r"teacher $\tau_t$", ylim=(1.0, 1.55))
ax[1].set_xticks(range(n), [repr(c)[1:-1] for c in chars])
ax[1].set_xlabel("response token")
plt.tight_layout()

# %% [markdown]
# ### The pipeline at this scale
#
# `toybench.tiny.run_method` runs `SFT(method) -> GRPO -> further SFT` for one seed and tracks the held-out SFT
# loss during GRPO and the reward during the further SFT: the decoupling measurements of notebook 01, on a
# transformer. With the quick budgets the GRPO stage sees almost no reward, so read the table as a smoke test.

# %%
rows = []
for method in cfg.methods:
    _, summary = run_method(setup, method, seed=0)
    rows.append(summary)
tiny = pd.DataFrame(rows).set_index("method")
tiny[["sft_pass@1", "sft_entropy", "sft_kl_base", "rl_pass@1", "rl_delta_sft_loss", "post_sft_delta_reward"]]

# %% [markdown]
# ## 2. The LLM: the same functions, chunked
#
# `llm.chunked.chunked_per_token(fn, hidden, W, ...)` applies an *unchanged* per-token function of
# `toybench.losses` to `hidden @ W.T`, `chunk_size` rows at a time, recomputing each chunk in backward. Frozen
# models (GIFT's base, CurioSFT's teacher) come in as `aux` pairs and are chunked the same way. We check it
# against the naive full-logits computation on a tiny Qwen3-architecture model built locally (`--tiny` preset,
# character tokenizer; no download).

# %%
from llm.chunked import chunked_per_token, final_hidden, full_per_token, output_weight
from llm.loading import load_model, load_tokenizer
from llm.tiny import TinySpec, build_tiny
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

tiny_dir = build_tiny(work / "llm_cache", TinySpec(pretrain_steps=10), verbose=False)
tok = load_tokenizer(str(tiny_dir))
model = load_model(str(tiny_dir), device=torch.device("cpu"), dtype=torch.float32)
batch = tok(["3 5 7>22:3*5+7", "2 4 9>17:9+4*2"], return_tensors="pt", padding=True)
ids, att = batch["input_ids"], batch["attention_mask"]  # (B, T)
hidden = final_hidden(model, ids, att)[:, :-1]  # (B, T-1, D)
targets, m = ids[:, 1:], att[:, 1:]
W = output_weight(model)
base_h = hidden.detach() + 0.1 * torch.randn_like(hidden)  # stand-in for the frozen base copy's hidden states
gift = lambda z, z_base, targets: losses.gift_loss(z, targets, z_base, beta=3.0)
chunked = chunked_per_token(gift, hidden, W, aux=[(base_h, W)], token_args={"targets": targets}, mask=m,
                            chunk_size=7)
full = full_per_token(gift, hidden, W, aux=[(base_h, W)], token_args={"targets": targets}) * m
print(f"V = {W.shape[0]}, rows = {int(m.sum())}, chunks of 7 rows")
print(f"max |chunked - full| = {(chunked - full).abs().max().item():.2e}")
assert torch.allclose(chunked, full, atol=1e-5)
g_chunk = torch.autograd.grad(losses.reduce(chunked, m), W, retain_graph=True)[0]
g_full = torch.autograd.grad(losses.reduce(full, m), W)[0]
assert torch.allclose(g_chunk, g_full, atol=1e-5)
print("gradients agree too")

# %% [markdown]
# ### The whole `llm` pipeline, tiny and quick
#
# `python -m llm pipeline --tiny --quick` runs `base -> SFT(method) -> GRPO -> eval` with real HF `transformers`
# code paths (chat template, masks, sampling, checkpoints, chunked losses). Here in-process, one method, with a
# 10-step pretrained tiny model so that it takes seconds:

# %%
from llm.config import PipelineConfig
from llm.pipeline import comparison_table, run_pipeline

llm_cfg = PipelineConfig(tiny=True, quick=True, methods=("gift@5",), tiny_pretrain_steps=10, device="cpu",
                         cache_dir=str(work / "llm_cache"), out=str(work / "llm_out"))
with contextlib.redirect_stderr(io.StringIO()):  # keep the stages' progress bars out of the notebook
    results = run_pipeline(llm_cfg)
display(Markdown(comparison_table(results)))
print(sorted(p.name for p in (work / "llm_out").iterdir()))

# %% [markdown]
# **What to notice.** The same code runs on Qwen3-0.6B: only `--model` and `--device` change. With these budgets
# the tiny model solves nothing (pass@1 = 0 and GRPO has no signal); it is a check that every stage runs, writes
# its config, metrics, checkpoints and report.

# %% [markdown]
# ## 3. Running it on Qwen3-0.6B on a GPU
#
# Weights are read from a local path or the Hugging Face hub cache (the code never downloads by itself, so fetch
# them first with `huggingface-cli download Qwen/Qwen3-0.6B` on a machine with network access). Then:
#
# ```bash
# # one SFT run (any method spec, spelled as in toybench: sft, entropy_sft@0.1, gift@5, curio, pear_token,
# # pear_block,block_size=4, dft, ...), resumable from <out>/checkpoint
# python -m llm sft --model Qwen/Qwen3-0.6B --device cuda --method gift@5 --out out/qwen/gift/sft
#
# # GRPO from that checkpoint, then evaluation (pass@k, entropy, held-out SFT loss)
# python -m llm grpo --model out/qwen/gift/sft/final --device cuda --out out/qwen/gift/grpo
# python -m llm eval --model out/qwen/gift/grpo/final --device cuda --out out/qwen/gift/eval
#
# # or everything, for several methods, with a comparison table and figures
# python -m llm pipeline --model Qwen/Qwen3-0.6B --device cuda --methods sft gift@5 curio --out out/qwen
#
# # several GPUs: torch.distributed (each prompt's GRPO group stays on one rank)
# torchrun --nproc_per_node 4 -m llm grpo --model out/qwen/gift/sft/final --out out/qwen/gift/grpo4
# ```
#
# `python -m llm <command> --help` lists every option with its docstring. A run writes its resolved
# `config.json`, `metrics.jsonl`, checkpoints and the final model under `--out`; `--resume` continues an
# interrupted run to the same result. The loss is always computed chunk by chunk (`--chunk-size`, default 1024
# rows), so the 151,936-token vocabulary never materialises as a full `[B, T, V]` tensor.

# %% [markdown]
# ## Exercises
#
# **1.** How much memory would the full float32 logits (and their gradient) of one GRPO batch take for Qwen3-0.6B
# with 8 prompts x 8 samples x 1,024 tokens, and how much does one chunk of 1,024 rows take?
#
# <details><summary>Answer</summary>
#
# $64 \cdot 1024 \cdot 151936 \cdot 4$ bytes $\approx 39.8$ GB per copy (twice that with the gradient), against
# $1024 \cdot 151936 \cdot 4 \approx 0.62$ GB for a chunk. The cell computes it.
# </details>

# %%
V_qwen = 151_936
full_gb = 64 * 1024 * V_qwen * 4 / 1e9
chunk_gb = 1024 * V_qwen * 4 / 1e9
print(f"full logits: {full_gb:.1f} GB per copy; one chunk: {chunk_gb:.2f} GB")
assert full_gb / chunk_gb == 64

# %% [markdown]
# **2.** Change `chunk_size` in the chunked check above to 1 and to 1,000. Does the result change? Why is that the
# property the LLM code needs?
#
# <details><summary>Answer</summary>
#
# No (up to float rounding): every per-token loss of the project depends only on its own row of logits, so
# splitting rows into chunks cannot change it. That is exactly why the losses are written per token and reduced
# separately: a loss that mixed positions (e.g. a sequence-level normalisation inside the loss) could not be
# chunked this way. (PEAR's weights do mix positions; `llm` computes them from per-token log-probs first, then
# weights the chunked NLL.)
# </details>

# %%
for cs in (1, 1000):
    other = chunked_per_token(gift, hidden.detach(), W.detach(), aux=[(base_h, W)], token_args={"targets": targets},
                              mask=m, chunk_size=cs)
    assert torch.allclose(other, chunked.detach(), atol=1e-5)

# %% [markdown]
# **3.** In the entropy plot, which response tokens get the hottest CurioSFT teacher, and why would plain entropy
# regularisation treat them no differently from the forced tokens?
#
# <details><summary>Answer</summary>
#
# The high-entropy choices (which number or operator comes next) get $\tau$ near 1.5; forced tokens stay near 1.1.
# An entropy bonus $\lambda H(\pi_t)$ has the same coefficient at every position: it raises the entropy of forced
# tokens too, i.e. it adds mass to characters that make the expression invalid (notebook 03, "where the entropy
# goes").
# </details>

# %%
hot = tau[row, :n] > 1.3
print("tokens with tau > 1.3:", [c for c, h in zip(chars, hot.tolist()) if h])
print("mean entropy, hot vs other tokens:",
      H_tok[hot].mean().item() if hot.any() else float("nan"), H_tok[~hot].mean().item() if (~hot).any() else float("nan"))

# %% [markdown]
# Clean up the temporary folder (comment this out to look at the files the runs wrote):

# %%
import shutil

shutil.rmtree(work, ignore_errors=True)
