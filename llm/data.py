"""Chat data for the LLM loops: task prompts, user JSONL, response-only masks, rewards.

Design choices
- An :class:`Example` is a chat prompt (``messages``), an optional expert ``response`` (the SFT
  target) and a verifier: either an arithmetic :class:`~toybench.tasks.arith.Puzzle` (the generated
  task, shared with the tiny transformer) or a final-number ``answer`` (GSM8K style).
- Tokens: prompt = chat template with the generation prompt (Qwen3: thinking off unless asked);
  response = its tokens + EOS. Prompt and response are tokenized separately and concatenated, so the
  SFT mask is exactly the response tokens (+ EOS) and matches what generation produces.
- Training batches are right-padded (positions of real tokens do not depend on padding);
  generation batches are left-padded by the tokenizer.
- Model output is untrusted: rewards parse it (bounded work), never ``eval`` it.
- Malformed JSONL raises ``ValueError("<file>:<line>: <what is wrong>")``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from toybench.tasks import arith

ROLES = ("system", "user", "assistant")
MAX_REWARD_TEXT = 4096  # characters of a response the number extractor looks at (its tail)


@dataclass(frozen=True)
class Example:
    """One prompt with its verifier and (for SFT) its expert response."""

    messages: tuple[dict, ...]
    response: str | None = None
    answer: str | None = None
    puzzle: arith.Puzzle | None = None

    def reward(self, text: str) -> float:
        """0/1 reward of a model response ``text`` (untrusted)."""
        if self.puzzle is not None:
            return arith.verify(self.puzzle, arith.extract_answer(text)).reward
        if self.answer is not None:
            return number_reward(text, self.answer)
        raise ValueError("example has neither a puzzle nor an answer: it cannot be rewarded")

    def final(self, text: str) -> str | None:
        """The answer a response commits to (for counting distinct correct answers)."""
        if self.puzzle is not None:
            return "".join(arith.extract_answer(text).split()) or None
        return extract_final_number(text)


# ---------------------------------------------------------------------------------------------
# Task prompts
# ---------------------------------------------------------------------------------------------
def arith_examples(puzzles: list[arith.Puzzle], style: str = "compact") -> list[Example]:
    """Chat examples of make-target puzzles; ``response`` is the expert solution (or None)."""
    return [
        Example(
            ({"role": "user", "content": arith.format_prompt(p, style)},), arith.expert_solution(p), None, p
        )
        for p in puzzles
    ]


def arith_splits(seed: int, n_train: int, n_heldout: int, style: str = "compact") -> dict[str, list[Example]]:
    """Disjoint splits: ``sft`` (expert-solvable), ``rl`` (any), ``heldout`` (expert-solvable,
    held-out SFT loss / reward probes) and ``eval`` (any). SFT data needs an expert response, so
    the SFT pool is drawn larger and filtered."""
    pool = arith.split_puzzles(seed, n_sft=4 * (n_train + n_heldout), n_rl=n_train, n_eval=n_heldout)
    solvable = [e for e in arith_examples(pool["sft"], style) if e.response is not None]
    if len(solvable) < n_train + n_heldout:
        raise ValueError(f"only {len(solvable)} expert-solvable puzzles; lower n_train/n_heldout")
    return {
        "sft": solvable[:n_train],
        "heldout": solvable[n_train : n_train + n_heldout],
        "rl": arith_examples(pool["rl"], style),
        "eval": arith_examples(pool["eval"], style),
    }


# ---------------------------------------------------------------------------------------------
# User JSONL
# ---------------------------------------------------------------------------------------------
def _parse_line(obj: object, where: str) -> Example:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if (
                not isinstance(m, dict)
                or set(m) - {"role", "content"}
                or "role" not in m
                or "content" not in m
            ):
                raise ValueError(
                    f"{where}: messages[{i}] must be an object with exactly 'role' and 'content'"
                )
            if m["role"] not in ROLES:
                raise ValueError(f"{where}: messages[{i}].role must be one of {ROLES}, got {m['role']!r}")
            if not isinstance(m["content"], str):
                raise ValueError(f"{where}: messages[{i}].content must be a string")
        response = None
        if msgs[-1]["role"] == "assistant":
            response, msgs = msgs[-1]["content"], msgs[:-1]
        if not any(m["role"] == "user" for m in msgs):
            raise ValueError(f"{where}: 'messages' needs a user turn before the final assistant turn")
        answer = obj.get("answer")
        if answer is not None and not isinstance(answer, str | int | float):
            raise ValueError(f"{where}: 'answer' must be a string or a number")
        if answer is None and response is not None:
            answer = extract_final_number(response)
        return Example(tuple(dict(m) for m in msgs), response, None if answer is None else str(answer))
    if "prompt" in obj:
        prompt, answer = obj["prompt"], obj.get("answer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: 'prompt' must be a non-empty string")
        if answer is None:
            raise ValueError(f"{where}: a 'prompt' line needs an 'answer'")
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError(f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}")
        answer = str(answer)
        final = extract_final_number(answer)
        if final is None:
            raise ValueError(f"{where}: 'answer' has no final number: {answer[-60:]!r}")
        response = obj.get("response", answer)
        if not isinstance(response, str):
            raise ValueError(f"{where}: 'response' must be a string")
        return Example(({"role": "user", "content": prompt},), response, final)
    raise ValueError(
        f"{where}: expected a 'prompt' (with 'answer') or a 'messages' field, got keys {sorted(obj)}"
    )


def read_jsonl(path: str | Path, max_examples: int | None = None) -> list[Example]:
    """Examples from a JSONL file of ``{"prompt", "answer"[, "response"]}`` or ``{"messages"[, "answer"]}``.

    Blank lines are skipped. Any malformed line raises ``ValueError`` naming file, line and problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            out.append(_parse_line(obj, where))
            if max_examples is not None and len(out) >= max_examples:
                break
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


# ---------------------------------------------------------------------------------------------
# Final-number answers (GSM8K style)
# ---------------------------------------------------------------------------------------------
_NUM = r"-?\d[\d,]{0,30}(?:\.\d{1,20})?|-?\.\d{1,20}"
_PATTERNS = (
    re.compile(r"####\s*\$?\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*\$?\s*(" + _NUM + r")\s*\}"),
    re.compile(r"answer\s*(?:is|:)\s*\$?\s*(" + _NUM + ")", re.IGNORECASE),
)
_ANY_NUM = re.compile(_NUM)


def _normalise(num: str) -> str | None:
    s = num.replace(",", "").rstrip(".")
    try:
        v = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return str(v.numerator) if v.denominator == 1 else str(float(v))


def extract_final_number(text: str) -> str | None:
    """The final numeric answer of a response, normalised (``"1,234.0"`` -> ``"1234"``), or None.

    Priority: the last ``#### x``, then ``\\boxed{x}``, then ``answer is x``, then the last number.
    Only the last ``MAX_REWARD_TEXT`` characters are read; regexes are linear (no nested repeats).

    >>> extract_final_number("so 3 + 4 = 7 apples.\\n#### 1,234")
    '1234'
    >>> extract_final_number("The answer is $-2.50.") , extract_final_number("no digits")
    ('-2.5', None)
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = text[-MAX_REWARD_TEXT:]
    for pat in _PATTERNS:
        hits = pat.findall(text)
        if hits:
            return _normalise(hits[-1])
    hits = _ANY_NUM.findall(text)
    return _normalise(hits[-1]) if hits else None


def number_reward(text: str, answer: str) -> float:
    """1.0 when the final number of ``text`` equals ``answer`` (as numbers), else 0.0."""
    got, want = extract_final_number(text), extract_final_number(str(answer))
    return float(got is not None and want is not None and Fraction(got) == Fraction(want))


# ---------------------------------------------------------------------------------------------
# Tokens and masks
# ---------------------------------------------------------------------------------------------
def prompt_ids(tok, ex: Example, enable_thinking: bool = False) -> list[int]:
    """Token ids of the chat-rendered prompt, ending with the assistant generation prompt."""
    text = tok.apply_chat_template(
        list(ex.messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def sft_ids(tok, ex: Example, enable_thinking: bool = False) -> tuple[list[int], list[int]]:
    """``(ids, mask)`` of prompt + response + EOS; mask = 1 exactly on the response and EOS."""
    if ex.response is None:
        raise ValueError("example has no response to train on")
    p = prompt_ids(tok, ex, enable_thinking)
    r = tok(ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + r, [0] * len(p) + [1] * len(r)


def collate(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``(ids, mask)`` pairs: ``input_ids``, ``attention_mask`` ``[B, T]`` and the
    next-token ``targets``/``loss_mask`` ``[B, T-1]`` (position t predicts token t+1)."""
    if not seqs:
        raise ValueError("seqs must be non-empty")
    T = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    att = torch.zeros(len(seqs), T, dtype=torch.long)
    lm = torch.zeros(len(seqs), T, dtype=torch.float32)
    for b, (x, m) in enumerate(seqs):
        ids[b, : len(x)] = torch.tensor(x)
        att[b, : len(x)] = 1
        lm[b, : len(m)] = torch.tensor(m, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": att, "targets": ids[:, 1:], "loss_mask": lm[:, 1:]}


def load_data(cfg) -> dict[str, list[Example]]:
    """``sft``/``heldout``/``rl``/``eval`` example lists for ``cfg.data`` (arith or a JSONL file)."""
    if cfg.data == "arith":
        return arith_splits(cfg.seed, cfg.n_train, cfg.n_heldout, style=cfg.prompt_style)
    train = read_jsonl(cfg.data, cfg.n_train + (0 if cfg.heldout_data else cfg.n_heldout))
    if cfg.heldout_data:
        held = read_jsonl(cfg.heldout_data, cfg.n_heldout)
    else:
        if len(train) < 2:
            raise ValueError(f"data={cfg.data!r}: need >= 2 examples to hold some out")
        k = min(cfg.n_heldout, len(train) // 2)
        train, held = train[:-k], train[-k:]
    return {"sft": train, "heldout": held, "rl": train, "eval": held}


__all__ = [
    "load_data",
    "Example",
    "arith_examples",
    "arith_splits",
    "collate",
    "extract_final_number",
    "number_reward",
    "prompt_ids",
    "read_jsonl",
    "sft_ids",
]
