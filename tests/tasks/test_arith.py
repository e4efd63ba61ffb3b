"""Tests of the make-target puzzle task: generator, splits, expert, verifier, tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toybench.tasks import (
    ALPHABET,
    CharTokenizer,
    Puzzle,
    all_solutions,
    expert_solution,
    extract_answer,
    format_prompt,
    generate_puzzles,
    pretraining_corpus,
    split_puzzles,
    verify,
)

P = Puzzle((3, 5, 7), 22)


def test_generation_is_seeded_and_solvable():
    a, b = generate_puzzles(50, seed=1), generate_puzzles(50, seed=1)
    assert a == b and a != generate_puzzles(50, seed=2)
    assert len(set(a)) == 50
    assert all(all_solutions(p) for p in a)


def test_splits_are_disjoint_and_sized():
    s = split_puzzles(0, n_sft=100, n_rl=80, n_eval=60)
    assert [len(s[k]) for k in ("sft", "rl", "eval")] == [100, 80, 60]
    sets = [set(s[k]) for k in ("sft", "rl", "eval")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_verifier_accepts_every_solution_and_the_expert():
    puzzles = generate_puzzles(60, seed=3)
    n_expert = 0
    for p in puzzles:
        sols = all_solutions(p)
        assert len(sols) >= 1
        for s in sols:
            assert verify(p, s).ok, (p, s, verify(p, s))
        e = expert_solution(p)
        if e is not None:
            n_expert += 1
            assert verify(p, e).ok and e in sols
    # the expert solves some, not all, puzzles: the point of the task
    assert 0 < n_expert < len(puzzles)


def test_many_solutions_per_puzzle_on_average():
    puzzles = generate_puzzles(100, seed=4)
    assert sum(len(all_solutions(p)) for p in puzzles) / 100 > 2


@pytest.mark.parametrize(
    "text, reason",
    [
        ("3*5+8", "numbers used"),
        ("3*5+7+0", "numbers used"),
        ("3*5", "numbers used"),
        ("3*7+5", "value"),
        ("3*5+", "unexpected end"),
        ("3**5+7", "unexpected '*'"),
        ("(3*5+7", "expected ')'"),
        ("3*5+7)", "unexpected ')'"),
        ("-3*5+7", "unexpected '-'"),
        ("3*5+07", "leading zero"),
        ("", "empty"),
        ("   ", "empty"),
        ("__import__('os')", "outside the grammar"),
        ("3*5+7\x00", "outside the grammar"),
        ("３*5+7", "non-ASCII"),
        ("3*5+7é", "non-ASCII"),
        ("7/(5-5)*3", "division by zero"),
        ("99999999999999999999*3", "digits"),
        ("(" * 60 + "3" + ")" * 60, "nesting"),
        ("1+" * 500 + "1", "longer than"),
    ],
)
def test_verifier_rejects_with_reason(text, reason):
    v = verify(P, text)
    assert not v.ok and v.reward == 0.0
    assert reason in v.reason, v.reason


def test_verifier_accepts_whitespace_and_redundant_parentheses():
    assert verify(P, " 3 * 5 + 7 ").ok
    assert verify(P, "((3*5))+(7)").ok
    assert verify(P, "7+5*3").reward == 1.0


def test_verifier_rational_arithmetic_is_exact():
    # 8 / (3 - 8/3) = 24 needs exact fractions
    assert verify(Puzzle((8, 3, 8, 3), 24), "8/(3-8/3)").ok


@pytest.mark.timeout(60)  # a guard against catastrophic parsing, not a timed assertion
def test_hostile_inputs_are_rejected():
    hostile = ["(" * 10**6, "9" * 10**6, "1/" * 10**5 + "0", "\u00e9" * 10**6, "1" + "*1" * 10**6]
    for h in hostile:
        assert not verify(P, h).ok


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET + "x.^é", max_size=60))
def test_verifier_never_raises(text):
    v = verify(P, text)
    assert isinstance(v.ok, bool) and isinstance(v.reason, str)


def test_verifier_rejects_non_string():
    with pytest.raises(ValueError, match="text"):
        verify(P, 3)  # type: ignore[arg-type]


def test_bad_knobs_raise_naming_argument():
    with pytest.raises(ValueError, match="n_numbers"):
        generate_puzzles(3, seed=0, n_numbers=9)
    with pytest.raises(ValueError, match="n_rl"):
        split_puzzles(0, 1, -1, 1)
    with pytest.raises(ValueError, match="more distinct puzzles"):
        generate_puzzles(10**5, seed=0, n_numbers=2, max_number=2)


def test_pretraining_corpus_is_valid_and_diverse():
    texts = pretraining_corpus(300, seed=0)
    tok = CharTokenizer()
    first_numbers = set()
    for t in texts:
        prompt, expr = t.split(":", 1)
        nums, target = prompt.split(">")
        p = Puzzle(tuple(int(x) for x in nums.split()), int(target))
        assert format_prompt(p) + expr == t
        assert verify(p, expr).ok
        assert tok.decode(tok.encode(t, bos=True, eos=True)) == t
        first_numbers.add(expr.lstrip("(")[0] == nums[0])
    # not just the expert's order: the corpus reorders numbers
    assert first_numbers == {True, False}
    excl = pretraining_corpus(50, seed=0, exclude={p})
    assert all(not x.startswith(format_prompt(p)) for x in excl)


def test_tokenizer_roundtrip_and_errors():
    tok = CharTokenizer()
    s = format_prompt(P) + "3*5+7"
    ids = tok.encode(s, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == s
    assert tok.decode(ids + tok.encode("99")) == s  # stops at eos
    assert tok.vocab_size == len(ALPHABET) + 3
    with pytest.raises(ValueError, match="'x'"):
        tok.encode("3x")


def test_prompt_styles_and_extract_answer():
    assert format_prompt(P) == "3 5 7>22:"
    assert "22" in format_prompt(P, style="instruct")
    with pytest.raises(ValueError, match="style"):
        format_prompt(P, style="nope")
    assert extract_answer("Let me think.\n3*5+7 = 22\n") == "3*5+7"
    assert extract_answer("blah <answer> 3*5+7 </answer>") == "3*5+7"
    assert verify(P, extract_answer("reasoning...\n3*5+7")).ok
