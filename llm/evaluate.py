"""Evaluation: unbiased pass@k over n samples per prompt, entropy, distinct correct answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from llm.checkpoint import prepare_out
from llm.config import EvalConfig, resolve, save_config
from llm.data import Example, collate
from llm.loading import load_model, load_tokenizer, precision, resolve_device
from llm.objectives import entropy_fn
from llm.rollout import generate
from llm.scoring import heldout_sft_loss, score
from llm.tiny import model_path
from llm.train import seed_everything
from toybench.losses import reduce
from toybench.metrics import pass_at_k


@torch.no_grad()
def evaluate(
    model,
    tok,
    examples: list[Example],
    n: int,
    ks: tuple[int, ...],
    temperature: float = 1.0,
    max_completion_length: int = 64,
    chunk_size: int = 1024,
    enable_thinking: bool = False,
    rewards=None,
) -> dict[str, float]:
    """Metrics over ``n`` samples of each prompt.

    pass@k: mean over prompts of the unbiased estimator (toybench.metrics.pass_at_k);
    entropy: token-mean entropy of the sampled responses at ``temperature``;
    distinct_correct: mean number of distinct correct final answers per prompt.
    ``rewards``: an :class:`llm.rewards.Rewards` (default: the data's built-in verifier); a sample is
    correct when its reward is > 0.
    """
    from llm.rewards import Rewards

    rewards = rewards or Rewards(("arith",) if examples and examples[0].puzzle else ("answer",), (1.0,))
    if any(k > n for k in ks):
        raise ValueError(f"ks={ks}: every k must be <= n={n}")
    device = next(model.parameters()).device
    groups = generate(
        model,
        tok,
        examples,
        n,
        temperature=temperature,
        max_completion_length=max_completion_length,
        enable_thinking=enable_thinking,
    )
    correct = np.array(rewards(examples, [[r.text for r in g] for g in groups])) > 0  # (P, n)
    distinct = [
        len({ex.final(r.text) for r, ok in zip(g, row) if ok})
        for ex, g, row in zip(examples, groups, correct)
    ]
    ent_sum, tok_sum = 0.0, 0.0
    flat = [r for g in groups for r in g]
    for s in range(0, len(flat), 64):
        batch = {
            k: v.to(device) for k, v in collate([r.seq for r in flat[s : s + 64]], tok.pad_token_id).items()
        }
        ent = score(model, batch, entropy_fn(temperature), chunk_size=chunk_size, with_targets=False)
        ent_sum += float(reduce(ent, batch["loss_mask"], "sum"))
        tok_sum += float(batch["loss_mask"].sum())
    out = {f"pass@{k}": float(np.mean(pass_at_k(n, correct.sum(1), k))) for k in ks}
    out |= {
        "entropy": ent_sum / max(tok_sum, 1.0),
        "distinct_correct": float(np.mean(distinct)),
        "response_len": tok_sum / max(len(flat), 1),
    }
    return out


def run_eval(cfg: EvalConfig, model=None, tok=None) -> dict:
    """Evaluate ``cfg.model`` on the eval split; writes ``<out>/eval.json``; returns the metrics.

    Runs in ``--dtype``'s precision as the training loops do (``auto``: bf16 autocast over fp32
    weights on a GPU, so the KV cache and the decoding are bf16; fp32 on CPU)."""
    cfg = resolve(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    prec = precision(cfg.dtype, device)
    path = model_path(cfg.model, cfg.tiny, cfg.cache_dir, cfg.tiny_pretrain_steps)
    tok = tok or load_tokenizer(path, cfg.trust_remote_code)
    model = model or load_model(path, device, prec.param_dtype, trust_remote_code=cfg.trust_remote_code)
    with prec.autocast():
        res = _evaluate_data(cfg, model, tok)
    out = Path(cfg.out)
    prepare_out(cfg)
    save_config(cfg, out)
    (out / "eval.json").write_text(json.dumps(res, indent=2))
    return res


def _evaluate_data(cfg: EvalConfig, model, tok) -> dict:
    """:func:`evaluate` on ``cfg``'s eval split, plus the held-out expert SFT loss."""
    from llm.data import load_data

    data = load_data(cfg)
    from llm.rewards import Rewards

    rewards = Rewards.of(cfg, data["eval"])
    if rewards is None:
        raise ValueError(
            f"data={cfg.data!r} has no verifier to evaluate with: give it an 'answer' column or pass --reward"
        )
    res = evaluate(
        model,
        tok,
        data["eval"],
        cfg.n_samples,
        cfg.ks,
        cfg.temperature,
        cfg.max_completion_length,
        cfg.chunk_size,
        cfg.enable_thinking,
        rewards,
    )
    held = [e for e in data["heldout"] if e.response is not None]
    if held:
        res["heldout_sft_loss"] = heldout_sft_loss(
            model, tok, held, cfg.chunk_size, enable_thinking=cfg.enable_thinking
        )
    return res


__all__ = ["evaluate", "run_eval"]
