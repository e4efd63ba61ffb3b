"""Data for the LLM loops: task prompts, user JSONL in the formats TRL users have, masks, answers.

Design choices
- An :class:`Example` is a prompt (``messages``), an optional expert ``response`` (the SFT target),
  an optional verifier (an arithmetic :class:`~toybench.tasks.arith.Puzzle` or a final-number
  ``answer``) and the dataset's other ``columns`` (passed to plug-in rewards, :mod:`llm.rewards`).
- JSONL formats (TRL's, plus GSM8K style), one object a line; ``answer`` is only needed by rewards:
  * conversational ``{"messages": [{"role", "content", ...}, ...]}``: extra keys (``name``...) are
    kept; EVERY assistant turn is trained (one example per assistant turn, its history as the
    prompt), or only the last with ``last_turn_only``; no assistant turn = a prompt (GRPO/eval);
  * ``{"prompt", "completion"}``: standard (strings: plain text, no chat template, as TRL) or
    conversational (lists of messages: the chat template);
  * ``{"text"}``: plain language modelling (every token trained; no prompt, so not for GRPO);
  * GSM8K style ``{"prompt", "answer"[, "response"]}``: the prompt is a user turn and the response
    (default: the answer, e.g. GSM8K's worked solution ending ``#### 4``) the target.
- Tokens: prompt = chat template with the generation prompt (Qwen3: thinking off unless asked);
  response = its tokens + EOS. Prompt and response are tokenized separately and concatenated, so the
  SFT mask is exactly the response tokens (+ EOS) and matches what generation produces. Sequences
  longer than ``max_length`` are truncated (counted and reported), so one huge line cannot exhaust
  memory; a line over ``MAX_LINE_BYTES`` bytes is an error.
- Training batches are right-padded (positions of real tokens do not depend on padding);
  generation batches are left-padded by the tokenizer.
- Model output is untrusted: rewards parse it (bounded work), never ``eval`` it.
- Malformed JSONL raises ``ValueError("<file>:<line>: <what is wrong>")``: invalid UTF-8, a line
  that is not JSON, a schema error, an empty file. Each example keeps its ``source`` (file:line), so
  later checks (:mod:`llm.validate`: an SFT example without an assistant turn) name the line too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch

from toybench.tasks import arith

ROLES = ("system", "user", "assistant", "tool")
MAX_LINE_BYTES = 10_000_000  # one JSONL line; longer is an error, not an allocation
MAX_REWARD_TEXT = 4096  # characters of a response the number extractor looks at (its tail)


@dataclass(frozen=True)
class Example:
    """One prompt with its verifier and (for SFT) its expert response."""

    messages: tuple[dict, ...]
    response: str | None = None
    answer: str | None = None
    puzzle: arith.Puzzle | None = None
    columns: dict = field(default_factory=dict, compare=False)
    """The dataset's other columns (for plug-in rewards)."""
    chat: bool = True
    """False: plain text (standard prompt/completion, ``text``): the prompt is ``messages[0]``'s
    content without a chat template (empty for ``text``)."""
    source: str = field(default="", compare=False)
    """Where it was read, ``<file>:<line>`` (empty for generated examples): errors name it."""

    def reward(self, text: str) -> float:
        """0/1 built-in reward of a model response ``text`` (untrusted)."""
        if self.puzzle is not None:
            return arith.verify(self.puzzle, arith.extract_answer(text)).reward
        if self.answer is not None:
            return number_reward(text, self.answer)
        raise ValueError("example has neither a puzzle nor an answer: it cannot be rewarded (use --reward)")

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
def _messages(msgs, where: str, key: str = "messages") -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise ValueError(f"{where}: {key!r} must be a non-empty list of messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: {key}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: {key}[{i}].role must be one of {ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: {key}[{i}].content must be a string")
    return [dict(m) for m in msgs]


def _answer(obj: dict, where: str) -> str | None:
    answer = obj.get("answer")
    if answer is None:
        return None
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise ValueError(f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}")
    return str(answer)


def _string(obj: dict, key: str, where: str) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise ValueError(
            f"{where}: {key!r} must be a non-empty string (or, for prompt/completion, a list of messages)"
        )
    return v


def _turns(msgs: list[dict], where: str, last_turn_only: bool, **kw) -> list[Example]:
    """One example per assistant turn (its history as the prompt); the prompt itself if there is none."""
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not turns:
        return [Example(tuple(msgs), None, **kw)]
    if last_turn_only:
        turns = turns[-1:]
    out = []
    for i in turns:
        if not any(m["role"] == "user" for m in msgs[:i]):
            raise ValueError(f"{where}: an assistant turn needs a user turn before it")
        out.append(Example(tuple(msgs[:i]), msgs[i]["content"], **kw))
    return out


def _parse_line(obj: object, where: str, last_turn_only: bool = False) -> list[Example]:
    """The examples of one JSONL object (several for a multi-turn conversation)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    answer = _answer(obj, where)
    known = {"messages", "prompt", "completion", "text", "answer", "response"}
    cols = {k: v for k, v in obj.items() if k not in known}
    if "messages" in obj:
        return _turns(_messages(obj["messages"], where), where, last_turn_only, answer=answer, columns=cols)
    if "text" in obj and "prompt" not in obj:
        return [
            Example(
                ({"role": "user", "content": ""},), _string(obj, "text", where), answer, None, cols, False
            )
        ]
    if "prompt" in obj and "completion" in obj:
        if isinstance(obj["prompt"], list):
            prompt = _messages(obj["prompt"], where, "prompt")
            comp = obj["completion"]
            if isinstance(comp, list):
                comp = _messages(comp, where, "completion")
                if [m["role"] for m in comp] != ["assistant"]:
                    raise ValueError(f"{where}: 'completion' must be one assistant message")
                comp = comp[0]["content"]
            elif not isinstance(comp, str):
                raise ValueError(f"{where}: 'completion' must be a string or a list of messages")
            return [Example(tuple(prompt), comp, answer, None, cols)]
        prompt, comp = _string(obj, "prompt", where), obj["completion"]
        if not isinstance(comp, str):
            raise ValueError(f"{where}: a string 'prompt' needs a string 'completion'")
        return [Example(({"role": "user", "content": prompt},), comp, answer, None, cols, False)]
    if "prompt" in obj:
        if isinstance(obj["prompt"], list):  # conversational prompt-only (GRPO)
            return [Example(tuple(_messages(obj["prompt"], where, "prompt")), None, answer, None, cols)]
        prompt = _string(obj, "prompt", where)
        if answer is None:
            raise ValueError(f"{where}: a string 'prompt' needs a 'completion' or an 'answer'")
        final = extract_final_number(answer)
        if final is None:
            raise ValueError(f"{where}: 'answer' has no final number: {answer[-60:]!r}")
        response = obj.get("response", answer)
        if not isinstance(response, str):
            raise ValueError(f"{where}: 'response' must be a string")
        return [Example(({"role": "user", "content": prompt},), response, final, None, cols)]
    raise ValueError(
        f"{where}: expected 'messages', 'prompt' (+ 'completion' or 'answer') or 'text', "
        f"got keys {sorted(obj)}"
    )


def _decode(raw: bytes, where: str, first: bool) -> str:
    """One line as text; invalid UTF-8 is an error naming the byte (a BOM on line 1 is dropped)."""
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 4]
        raise ValueError(
            f"{where}: invalid UTF-8 at byte {e.start + 1} of the line ({bad!r}); save the file as UTF-8"
        ) from None


def read_jsonl(
    path: str | Path, max_examples: int | None = None, last_turn_only: bool = False
) -> list[Example]:
    """Examples from a JSONL file in any format of the module docstring: the first ``max_examples``
    (all unless given); the whole file is read and checked either way.

    Blank lines are skipped. Every problem is a ``ValueError`` naming ``<file>:<line>`` and what is
    wrong: invalid UTF-8 (the byte), a non-JSON line (the column), a schema error (the key), an
    empty file. Why not ``datasets.load_dataset("json")`` (not a dependency): it reports a bad line
    as an Arrow/pandas parse error of a whole block, without the line number, and decodes the
    file before any schema check; a per-line reader costs ~60 lines and gives the exact line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    out: list[Example] = []
    with path.open("rb") as f:
        lineno = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise ValueError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
            line = _decode(raw, where, lineno == 1)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            out += [replace(e, source=where) for e in _parse_line(obj, where, last_turn_only)]
    if not out:
        raise ValueError(f"{path}: no examples (the file is empty or has only blank lines)")
    return out if max_examples is None else out[:max_examples]


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
    """Token ids of the chat-rendered prompt, ending with the assistant generation prompt (plain
    text examples: the prompt's tokens as they are)."""
    if not ex.chat:
        return tok(ex.messages[0]["content"], add_special_tokens=False)["input_ids"]
    text = tok.apply_chat_template(
        list(ex.messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def sft_ids(tok, ex: Example, enable_thinking: bool = False) -> tuple[list[int], list[int]]:
    """``(ids, mask)`` of prompt + response + EOS; mask = 1 exactly on the response and EOS
    (:func:`sft_seqs` truncates and counts)."""
    if ex.response is None:
        raise ValueError("example has no response to train on")
    p = prompt_ids(tok, ex, enable_thinking)
    r = tok(ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids, mask = p + r, [0] * len(p) + [1] * len(r)
    return ids, mask


def sft_seqs(
    tok,
    examples: list[Example],
    max_length: int | None = None,
    enable_thinking: bool = False,
    log=print,
    counts: dict | None = None,
) -> list[tuple[list[int], list[int]]]:
    """:func:`sft_ids` of every example, truncated to ``max_length``; truncations are counted
    (``counts["truncated"]`` when a dict is given) and reported through ``log`` (one line).
    Examples left without a response token are dropped (said
    so); none left is a ``ValueError``."""
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    full = [sft_ids(tok, ex, enable_thinking) for ex in examples]
    if max_length is None:
        return full
    cut = sum(len(ids) > max_length for ids, _ in full)
    if counts is not None:
        counts["truncated"] = cut
    seqs = [(ids[:max_length], m[:max_length]) for ids, m in full]
    kept = [(ids, m) for ids, m in seqs if sum(m) > 0]  # a prompt longer than max_length trains nothing
    if cut:
        longest = max(len(ids) for ids, _ in full)
        dropped = (
            f"; {len(seqs) - len(kept)} with no response token left are dropped"
            if len(kept) < len(seqs)
            else ""
        )
        log(
            f"[data] {cut} of {len(full)} examples truncated to max_length={max_length} tokens "
            f"(longest: {longest}){dropped}"
        )
    if not kept:
        raise ValueError(
            f"max_length={max_length}: every example's prompt fills it; no response token is left"
        )
    return kept


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
    """``sft``/``heldout``/``rl``/``eval`` example lists for ``cfg.data`` (arith or a JSONL file).

    A file is used whole unless ``n_train``; held-out examples come from ``heldout_data`` or an
    explicit ``heldout_frac`` (the file's last lines, at most ``n_heldout``), else there are none and
    evaluation runs on the training prompts. ``rl`` holds the examples with a prompt (not ``text``).
    """
    if cfg.data == "arith":
        n = 512 if cfg.n_train is None else cfg.n_train
        return arith_splits(cfg.seed, n, cfg.n_heldout, style=cfg.prompt_style)
    last = getattr(cfg, "last_turn_only", False)
    train = read_jsonl(cfg.data, cfg.n_train, last)
    frac = getattr(cfg, "heldout_frac", 0.0)
    if cfg.heldout_data:
        held = read_jsonl(cfg.heldout_data, cfg.n_heldout or None, last)
    elif frac > 0:
        k = min(cfg.n_heldout, max(1, round(frac * len(train))))
        if len(train) - k < 1:
            raise ValueError(
                f"data={cfg.data!r}: {len(train)} examples leave none to train on at heldout_frac={frac}"
            )
        train, held = train[:-k], train[-k:]
    else:
        held = []
    rl = [e for e in train if e.chat or e.messages[0]["content"]]
    return {"sft": train, "heldout": held, "rl": rl, "eval": held or rl}


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
    "sft_seqs",
]
