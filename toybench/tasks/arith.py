""" "Make-target" arithmetic puzzles: generator, expert, verifier and tokenizer.

A puzzle gives a few small numbers and a target; a solution is an arithmetic expression that uses
every given number exactly once (the Countdown rule) with ``+ - * /`` and parentheses and evaluates
exactly (rational arithmetic) to the target. A puzzle has many valid solutions (commutations,
regroupings, different strategies), which is what the SFT -> RL question needs: expert data covers
ONE strategy, the base model's prior is spread over many, and RL prompts are disjoint from SFT ones.

Design choices
- The expert ("canonical strategy") only writes left-to-right folds ``((a o b) o c)`` of the
  numbers IN THE GIVEN ORDER with ``+ - *`` (no division, no reordering), trying operators in a
  fixed order. It therefore solves only a subset of puzzles; the rest need a strategy the expert
  never demonstrates (reordering, regrouping, division): the analogue of a "strategy fork".
- The verifier parses with a small recursive-descent grammar (never ``eval``/``exec``)::

      expr   := term (('+' | '-') term)*
      term   := factor (('*' | '/') factor)*
      factor := NUMBER | '(' expr ')'

  and rejects hostile input (too long, non-ASCII, deep nesting, big numbers, division by zero)
  before or while parsing, with a reason. Work is bounded by ``MAX_TEXT_LEN`` characters.
- The module is pure Python (no torch/numpy) so that both ``toybench`` and ``llm`` import it
  without breaking the layering ``theory <- toybench <- llm``.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from toybench.config import require

__all__ = [
    "ALPHABET",
    "MAX_TEXT_LEN",
    "PROMPT_END",
    "PROMPT_SEP",
    "CharTokenizer",
    "Puzzle",
    "Verdict",
    "all_solutions",
    "check_task_knobs",
    "expert_solution",
    "extract_answer",
    "format_prompt",
    "generate_puzzles",
    "pretraining_corpus",
    "random_expression",
    "split_puzzles",
    "verify",
]

OPS = "+-*/"
EXPERT_OPS = "+-*"
MAX_TEXT_LEN = 128
MAX_DEPTH = 8
MAX_DIGITS = 4
PROMPT_SEP = ">"
PROMPT_END = ":"
#: every character a prompt or a solution can contain (the tokenizer's vocabulary).
ALPHABET = "0123456789+-*/() " + PROMPT_SEP + PROMPT_END + "="


# ---------------------------------------------------------------------------------------------
# Puzzles
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Puzzle:
    """A make-target puzzle: use every number once to reach ``target``."""

    numbers: tuple[int, ...]
    target: int


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`verify`: ``ok`` and a short human-readable ``reason``."""

    ok: bool
    reason: str

    @property
    def reward(self) -> float:
        """The 0/1 reward."""
        return 1.0 if self.ok else 0.0


def _precedence(op: str) -> int:
    return 1 if op in "+-" else 2


def _combine(op: str, a: Fraction, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b


def _render(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    """Join two rendered sub-expressions with minimal parentheses; returns (text, precedence)."""
    p = _precedence(op)
    (lt, lp), (rt, rp) = left, right
    if lp < p:
        lt = f"({lt})"
    # right operand of - and / needs parentheses at equal precedence (non-associative)
    if rp < p or (rp == p and op in "-/"):
        rt = f"({rt})"
    return f"{lt}{op}{rt}", p


@lru_cache(maxsize=4096)
def _all_exprs_prec(numbers: tuple[int, ...], ops: str) -> tuple[tuple[Fraction, tuple[str, int]], ...]:
    """Like :func:`_all_exprs` but keeps each text's top-level precedence (3 = atom)."""
    if len(numbers) == 1:
        return ((Fraction(numbers[0]), (str(numbers[0]), 3)),)
    out: dict[tuple[Fraction, tuple[str, int]], None] = {}
    idx = range(len(numbers))
    for r in range(1, len(numbers)):
        for left_idx in itertools.combinations(idx, r):
            left = tuple(sorted(numbers[i] for i in left_idx))
            right = tuple(sorted(numbers[i] for i in idx if i not in left_idx))
            for (lv, lt), (rv, rt) in itertools.product(
                _all_exprs_prec(left, ops), _all_exprs_prec(right, ops)
            ):
                for op in ops:
                    v = _combine(op, lv, rv)
                    if v is not None:
                        out[(v, _render(op, lt, rt))] = None
    return tuple(out)


def _all_exprs(numbers: tuple[int, ...], ops: str) -> list[tuple[Fraction, str]]:
    """Every (value, text) of expressions using each number of the sorted multiset exactly once."""
    return [(v, t) for v, (t, _) in _all_exprs_prec(numbers, ops)]


def all_solutions(p: Puzzle, ops: str = OPS) -> list[str]:
    """All distinct solution texts (minimal parentheses) of ``p``; sorted, may be empty."""
    key = tuple(sorted(p.numbers))
    return sorted({t for v, t in _all_exprs(key, ops) if v == p.target})


def _reachable_targets(numbers: tuple[int, ...], max_target: int, ops: str) -> list[int]:
    vals = {v for v, _ in _all_exprs(tuple(sorted(numbers)), ops)}
    return sorted(int(v) for v in vals if v.denominator == 1 and 0 <= v <= max_target)


def check_task_knobs(n_numbers: int, min_number: int, max_number: int, max_target: int) -> None:
    """Raise ValueError naming the task knob out of its supported range."""
    if not 2 <= n_numbers <= 5:
        raise ValueError(f"n_numbers must be in [2, 5], got {n_numbers}")
    if not 1 <= min_number <= max_number <= 99:
        raise ValueError(f"need 1 <= min_number <= max_number <= 99, got {min_number}, {max_number}")
    if not 1 <= max_target <= 9999:
        raise ValueError(f"max_target must be in [1, 9999], got {max_target}")


def generate_puzzles(
    n: int,
    seed: int,
    n_numbers: int = 3,
    min_number: int = 1,
    max_number: int = 9,
    max_target: int = 40,
) -> list[Puzzle]:
    """``n`` distinct solvable puzzles, seeded.

    Numbers are drawn uniformly (with repetition, order kept: the order matters to the expert);
    the target is uniform over the integers in ``[0, max_target]`` that some expression reaches,
    so easy and hard targets are equally likely. Raises ValueError if ``n`` distinct puzzles cannot
    be found.
    """
    check_task_knobs(n_numbers, min_number, max_number, max_target)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: dict[Puzzle, None] = {}
    misses = 0  # consecutive draws that gave nothing new: the pool is (nearly) exhausted
    while len(seen) < n:
        if misses > 2000:
            raise ValueError(f"n={n} is more distinct puzzles than these knobs give")
        nums = tuple(rng.randint(min_number, max_number) for _ in range(n_numbers))
        targets = _reachable_targets(nums, max_target, OPS)
        p = Puzzle(nums, rng.choice(targets)) if targets else None
        if p is None or p in seen:
            misses += 1
            continue
        misses = 0
        seen[p] = None
    return list(seen)


def split_puzzles(seed: int, n_sft: int, n_rl: int, n_eval: int, **knobs: int) -> dict[str, list[Puzzle]]:
    """Disjoint ``{"sft", "rl", "eval"}`` puzzle sets from one seeded pool (knobs as in generate)."""
    require(dict(n_sft=n_sft, n_rl=n_rl, n_eval=n_eval), non_negative=("n_sft", "n_rl", "n_eval"))
    pool = generate_puzzles(n_sft + n_rl + n_eval, seed, **knobs)
    return {"sft": pool[:n_sft], "rl": pool[n_sft : n_sft + n_rl], "eval": pool[n_sft + n_rl :]}


def expert_solution(p: Puzzle) -> str | None:
    """The canonical expert: a left fold of the numbers in the given order with ``+ - *``.

    Operator sequences are tried in lexicographic order of ``"+-*"``; the first that hits the
    target is written with minimal parentheses. Returns None when this strategy cannot solve ``p``.
    """
    for ops in itertools.product(EXPERT_OPS, repeat=len(p.numbers) - 1):
        value = Fraction(p.numbers[0])
        text: tuple[str, int] = (str(p.numbers[0]), 3)
        for op, x in zip(ops, p.numbers[1:]):
            value = _combine(op, value, Fraction(x))  # type: ignore[assignment]
            text = _render(op, text, (str(x), 3))
        if value == p.target:
            return text[0]
    return None


def format_prompt(p: Puzzle, style: str = "compact") -> str:
    """The plain-text prompt.

    ``compact`` (the tiny transformer's format, e.g. ``"3 5 7>22:"``) or ``instruct`` (a sentence
    for an instruction-tuned LLM, which should answer with the bare expression on its last line).
    """
    if style == "compact":
        return " ".join(map(str, p.numbers)) + PROMPT_SEP + str(p.target) + PROMPT_END
    if style == "instruct":
        nums = ", ".join(map(str, p.numbers))
        return (
            f"Using the numbers {nums}, each exactly once, and the operations + - * / with parentheses, "
            f"write an expression that equals {p.target}. Answer with the expression only."
        )
    raise ValueError(f"style must be 'compact' or 'instruct', got {style!r}")


def random_expression(numbers: tuple[int, ...], rng: random.Random, ops: str = OPS) -> tuple[Fraction, str]:
    """A random expression over a random order and a random binary tree (value, text)."""
    nums = list(numbers)
    rng.shuffle(nums)
    items: list[tuple[Fraction, tuple[str, int]]] = [(Fraction(x), (str(x), 3)) for x in nums]
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)  # merge a random adjacent pair: uniform-ish trees
        (lv, lt), (rv, rt) = items[i], items[i + 1]
        choices = [op for op in ops if not (op == "/" and rv == 0)]
        op = rng.choice(choices)
        items[i : i + 2] = [(_combine(op, lv, rv), _render(op, lt, rt))]  # type: ignore[list-item]
    return items[0][0], items[0][1][0]


def pretraining_corpus(
    n: int,
    seed: int,
    n_numbers: int = 3,
    min_number: int = 1,
    max_number: int = 9,
    max_target: int = 40,
    exclude: frozenset[Puzzle] | set[Puzzle] = frozenset(),
) -> list[str]:
    """``n`` texts ``prompt + expression`` of broad, diverse valid expressions (a "web" prior).

    Each text is a random expression (random order, tree shape and operators) over random numbers,
    whose value (integer in ``[0, max_target]``) becomes the target: every text is a correct
    solution, but they spread over all strategies, unlike the expert. Puzzles in ``exclude``
    (e.g. the eval set) are skipped.
    """
    check_task_knobs(n_numbers, min_number, max_number, max_target)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        nums = tuple(rng.randint(min_number, max_number) for _ in range(n_numbers))
        value, text = random_expression(nums, rng)
        if value.denominator != 1 or not 0 <= value <= max_target:
            continue
        p = Puzzle(nums, int(value))
        if p in exclude:
            continue
        out.append(format_prompt(p) + text)
    return out


# ---------------------------------------------------------------------------------------------
# Verifier: tokenise, parse, evaluate with a small grammar; nothing is ever executed as Python
# ---------------------------------------------------------------------------------------------
class _Reject(Exception):
    pass


class _Parser:
    """Recursive-descent parser over a whitespace-free ASCII string; returns (value, numbers used)."""

    def __init__(self, s: str) -> None:
        self.s, self.i, self.depth, self.used = s, 0, 0, []

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def expr(self) -> Fraction:
        v = self.term()
        while self.peek() in ("+", "-") and self.peek():
            op = self.s[self.i]
            self.i += 1
            v = _combine(op, v, self.term())  # type: ignore[assignment]
        return v

    def term(self) -> Fraction:
        v = self.factor()
        while self.peek() in ("*", "/") and self.peek():
            op = self.s[self.i]
            self.i += 1
            rhs = self.factor()
            out = _combine(op, v, rhs)
            if out is None:
                raise _Reject("division by zero")
            v = out
        return v

    def factor(self) -> Fraction:
        c = self.peek()
        if c == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Reject(f"nesting deeper than {MAX_DEPTH}")
            self.i += 1
            v = self.expr()
            if self.peek() != ")":
                raise _Reject(f"expected ')' at position {self.i}")
            self.i += 1
            self.depth -= 1
            return v
        if c.isdigit():
            j = self.i
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
            digits = self.s[j : self.i]
            if len(digits) > MAX_DIGITS:
                raise _Reject(f"number with more than {MAX_DIGITS} digits")
            if len(digits) > 1 and digits[0] == "0":
                raise _Reject("number with a leading zero")
            self.used.append(int(digits))
            return Fraction(int(digits))
        raise _Reject(f"unexpected {c!r} at position {self.i}" if c else "unexpected end of expression")


def extract_answer(text: str) -> str:
    """The candidate expression in a free-form (LLM) answer: the last non-empty line, with a
    trailing ``= <number>`` and ``<answer>`` tags removed. Bounded work for any input."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = text[-4 * MAX_TEXT_LEN :]
    if "<answer>" in text:
        text = text.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    if "=" in line:
        line = line.split("=", 1)[0].strip()
    return line


def verify(p: Puzzle, text: str) -> Verdict:
    """Check that ``text`` is an expression using each number of ``p`` once that equals the target.

    Whitespace is ignored; anything else outside the grammar is rejected with a reason. Never
    evaluates code and never raises on untrusted ``text`` (only on a non-str argument).

    >>> verify(Puzzle((3, 5, 7), 22), "3*5+7")
    Verdict(ok=True, reason='ok')
    >>> verify(Puzzle((3, 5, 7), 22), "3*5+8").reason
    'numbers used [3, 5, 8] != given [3, 5, 7]'
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_LEN:
        return Verdict(False, f"longer than {MAX_TEXT_LEN} characters")
    if not text.isascii():
        return Verdict(False, "non-ASCII character")
    s = "".join(text.split())
    if not s:
        return Verdict(False, "empty")
    bad = sorted({c for c in s if c not in "0123456789+-*/()"})
    if bad:
        return Verdict(False, f"character {bad[0]!r} outside the grammar")
    parser = _Parser(s)
    try:
        value = parser.expr()
        if parser.i != len(s):
            raise _Reject(f"unexpected {s[parser.i]!r} at position {parser.i}")
    except _Reject as e:
        return Verdict(False, str(e))
    except RecursionError:  # unreachable with MAX_DEPTH, kept as a belt-and-braces guard
        return Verdict(False, "nesting too deep")
    if Counter(parser.used) != Counter(p.numbers):
        return Verdict(False, f"numbers used {sorted(parser.used)} != given {sorted(p.numbers)}")
    if value != p.target:
        return Verdict(False, f"value {value} != target {p.target}")
    return Verdict(True, "ok")


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
class CharTokenizer:
    """Character tokenizer over :data:`ALPHABET` with ``pad=0``, ``bos=1``, ``eos=2``."""

    pad_id, bos_id, eos_id = 0, 1, 2
    specials = ("<pad>", "<bos>", "<eos>")

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet has repeated characters")
        self.alphabet = alphabet
        self.stoi = {c: i + len(self.specials) for i, c in enumerate(alphabet)}
        self.itos = {i: c for c, i in self.stoi.items()}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + len(self.specials)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``; raises ValueError naming the first character outside the alphabet."""
        try:
            ids = [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"text has character {e.args[0]!r} outside the alphabet") from None
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, stopping at the first eos and skipping pad/bos."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in self.itos:
                out.append(self.itos[i])
        return "".join(out)
