"""Data: JSONL parsing with clear errors, final-number extraction, masks, hostile model outputs."""

from __future__ import annotations

import json

import pytest

from llm.data import arith_splits, collate, extract_final_number, number_reward, read_jsonl, sft_ids
from llm.tiny import build_tiny_tokenizer
from toybench.tasks.arith import Puzzle


def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_reads_prompt_answer_and_messages(tmp_path):
    p = _write(
        tmp_path,
        [
            {"prompt": "2+2?", "answer": "2 plus 2 is 4\n#### 4"},
            "",
            {
                "messages": [
                    {"role": "user", "content": "3*3?"},
                    {"role": "assistant", "content": "The answer is 9."},
                ]
            },
            {"prompt": "x", "answer": 12},
        ],
    )
    exs = read_jsonl(p)
    assert [e.answer for e in exs] == ["4", "9", "12"]
    assert exs[0].response.endswith("#### 4") and exs[1].messages == ({"role": "user", "content": "3*3?"},)
    assert exs[0].reward("so... #### 4") == 1.0 and exs[0].reward("#### 5") == 0.0


@pytest.mark.parametrize(
    "line,msg",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"prompt": "q"}), "needs an 'answer'"),
        (json.dumps({"prompt": "", "answer": "1"}), "non-empty string"),
        (json.dumps({"prompt": "q", "answer": "none"}), "no final number"),
        (json.dumps({"prompt": "q", "answer": True}), "string or a number"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role must be one of"),
        (json.dumps({"messages": [{"role": "user"}]}), "exactly 'role' and 'content'"),
        (json.dumps({"messages": []}), "non-empty list"),
        (json.dumps({"text": "hello"}), "expected a 'prompt'"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, msg):
    p = _write(tmp_path, [{"prompt": "ok", "answer": "1"}, line])
    with pytest.raises(ValueError, match=msg) as e:
        read_jsonl(p)
    assert f"{p}:2:" in str(e.value)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no examples"):
        read_jsonl(tmp_path / "e.jsonl")


@pytest.mark.parametrize(
    "text,want",
    [
        ("#### 1,234", "1234"),
        ("blah \\boxed{ 42 } then 7", "42"),
        ("The answer is: -3.50", "-3.5"),
        ("first 3 then 5.", "5"),
        ("#### 5\n#### 6", "6"),
        ("nothing", None),
        ("", None),
    ],
)
def test_extract_final_number(text, want):
    assert extract_final_number(text) == want


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('echo pwned')",
        "9" * 100_000,
        "(" * 10_000 + "1" + ")" * 10_000,
        "\x00\xff\u202e 42",
        "1/0",
        "1" + "+1" * 5000,
        "#### " + "9," * 40_000,
    ],
)
def test_hostile_outputs_are_parsed_not_run(hostile):
    assert number_reward(hostile, "7") in (0.0, 1.0)
    ex = arith_splits(0, 2, 2)["eval"][0]
    assert ex.reward(hostile) == 0.0
    assert number_reward("so #### 7", "7") == 1.0


def test_sft_mask_is_the_response_plus_eos():
    tok = build_tiny_tokenizer()
    ex = arith_splits(0, 4, 2)["sft"][0]
    ids, mask = sft_ids(tok, ex)
    resp = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(resp[:-1]) == ex.response and resp[-1] == tok.eos_token_id
    assert ex.reward(ex.response) == 1.0 and isinstance(ex.puzzle, Puzzle)
    b = collate([(ids, mask), (ids[:-2], mask[:-2])], tok.pad_token_id)
    assert b["targets"].shape == b["loss_mask"].shape == (2, len(ids) - 1)
    assert b["loss_mask"][1, len(ids) - 3 :].sum() == 0  # padding never counts
