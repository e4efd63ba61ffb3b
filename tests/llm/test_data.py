"""Data: JSONL parsing with clear errors, final-number extraction, masks, hostile model outputs."""

from __future__ import annotations

import json

import pytest

from llm.config import SFTConfig
from llm.data import (
    arith_splits,
    collate,
    extract_final_number,
    load_data,
    number_reward,
    read_jsonl,
    sft_ids,
    sft_seqs,
)
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
    assert [e.answer for e in exs] == ["4", None, "12"]  # an answer only from the 'answer' column
    assert exs[0].response.endswith("#### 4") and exs[1].messages == ({"role": "user", "content": "3*3?"},)
    assert exs[0].reward("so... #### 4") == 1.0 and exs[0].reward("#### 5") == 0.0


@pytest.mark.parametrize(
    "line,msg",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"prompt": "q"}), "needs a 'completion' or an 'answer'"),
        (json.dumps({"prompt": "", "answer": "1"}), "non-empty string"),
        (json.dumps({"prompt": "q", "answer": "none"}), "no final number"),
        (json.dumps({"prompt": "q", "answer": True}), "string or a number"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role must be one of"),
        (json.dumps({"messages": [{"role": "user"}]}), "'role' and 'content'"),
        (json.dumps({"prompt": "q", "completion": 3}), "string 'completion'"),
        (
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": "q"}],
                    "completion": [{"role": "user", "content": "a"}],
                }
            ),
            "one assistant message",
        ),
        (json.dumps({"messages": []}), "non-empty list"),
        (json.dumps({"txt": "hello"}), "expected 'messages', 'prompt'"),
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
    assert number_reward(hostile, "7") == 0.0  # none of them ends in the number 7
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


def test_trl_formats(tmp_path):
    """TRL's formats: conversational messages (extra keys, every assistant turn), standard and
    conversational prompt/completion, text; answer only when the 'answer' column says so."""
    conv = [
        {"role": "system", "content": "be brief", "name": "sys"},
        {"role": "user", "content": "1+1?", "name": "alice"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "and 2+2?"},
        {"role": "assistant", "content": "four"},
    ]
    p = _write(
        tmp_path,
        [
            {"messages": conv, "id": 7},
            {"prompt": "say hi:", "completion": " hi", "answer": "0"},
            {
                "prompt": [{"role": "user", "content": "q?"}],
                "completion": [{"role": "assistant", "content": "a"}],
            },
            {"text": "plain language modelling"},
            {"prompt": [{"role": "user", "content": "only a prompt"}], "answer": 3},
        ],
    )
    exs = read_jsonl(p)
    assert [e.response for e in exs] == ["two", "four", " hi", "a", "plain language modelling", None]
    assert exs[0].messages == tuple(conv[:2]) and exs[1].messages == tuple(conv[:4])  # history = prompt
    assert exs[0].messages[1]["name"] == "alice" and exs[0].columns == {"id": 7}
    assert [e.chat for e in exs] == [True, True, False, True, False, True]
    assert [e.answer for e in exs] == [None, None, "0", None, None, "3"]
    last = read_jsonl(p, last_turn_only=True)
    assert [e.response for e in last][:2] == ["four", " hi"]
    tok = build_tiny_tokenizer()
    ids, mask = sft_ids(tok, exs[2])  # standard: plain text, no chat template
    assert tok.decode(ids) == "say hi: hi<|im_end|>" and sum(mask) == len(tok(" hi")["input_ids"]) + 1
    ids, mask = sft_ids(tok, exs[4])  # text: every token is a target
    assert sum(mask) == len(ids) and tok.decode(ids[:-1]) == "plain language modelling"


def test_overlong_line_is_truncated_and_counted(tmp_path):
    p = _write(tmp_path, [{"prompt": "q", "completion": "a" * 24_000}, {"prompt": "r", "completion": "b"}])
    exs, msgs = read_jsonl(p), []
    seqs = sft_seqs(build_tiny_tokenizer(), exs, max_length=64, log=msgs.append)
    assert [len(ids) for ids, _ in seqs] == [64, 3] and [len(m) for _, m in seqs] == [64, 3]
    assert msgs == ["[data] 1 of 2 examples truncated to max_length=64 tokens (longest: 24002)"]
    assert sft_seqs(build_tiny_tokenizer(), exs[1:], max_length=64, log=msgs.append) and len(msgs) == 1
    long_prompt = _write(
        tmp_path, [{"prompt": "q" * 100, "completion": "a"}, {"prompt": "r", "completion": "b"}]
    )
    assert len(sft_seqs(build_tiny_tokenizer(), read_jsonl(long_prompt), 64, log=msgs.append)) == 1
    assert "1 with no response token left are dropped" in msgs[-1]
    with pytest.raises(ValueError, match="max_length=64"):
        sft_seqs(build_tiny_tokenizer(), read_jsonl(long_prompt)[:1], 64, log=msgs.append)


def test_no_silent_caps_and_explicit_heldout(tmp_path):
    p = _write(tmp_path, [{"prompt": f"q{i}", "answer": str(i)} for i in range(40)])
    cfg = SFTConfig(data=str(p))
    d = load_data(cfg)
    assert len(d["sft"]) == 40 and d["heldout"] == [] and len(d["eval"]) == 40  # the whole file
    d = load_data(SFTConfig(data=str(p), heldout_frac=0.25))
    assert len(d["sft"]) == 30 and [e.answer for e in d["heldout"]] == [str(i) for i in range(30, 40)]
    d = load_data(SFTConfig(data=str(p), n_train=5))
    assert len(d["sft"]) == 5
    (tmp_path / "h").mkdir()
    h = _write(tmp_path / "h", [{"prompt": "h", "answer": "1"}])
    d = load_data(SFTConfig(data=str(p), heldout_data=str(h)))
    assert len(d["sft"]) == 40 and len(d["heldout"]) == 1
