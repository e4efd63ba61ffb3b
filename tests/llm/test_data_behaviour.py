"""Data and reward behaviours, worked out by hand: which assistant turns of a multi-turn chat train
(after tool turns too); truncation counted only past ``max_length``; the held-out split capped at
``n_heldout``; answers read from the END of a long response; default reward weights 1 each, summed."""

from __future__ import annotations

import json

from llm.config import GRPOConfig, SFTConfig
from llm.data import MAX_REWARD_TEXT, Example, extract_final_number, load_data, read_jsonl, sft_ids, sft_seqs
from llm.rewards import Rewards
from llm.tiny import build_tiny_tokenizer

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": "calling get_weather"},
    {"role": "tool", "content": "18C, sunny"},
    {"role": "assistant", "content": "18C and sunny"},
    {"role": "user", "content": "and tomorrow?"},
    {"role": "assistant", "content": "no forecast"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_assistant_turn_trains_with_its_history_even_after_a_tool_turn(tmp_path):
    """Assistant turns are messages 2, 4 (right after the tool result) and 6: three examples whose
    prompts are the 2, 4 and 6 messages before them; --last-turn-only keeps the third alone."""
    p = _jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}])
    exs = read_jsonl(p)
    assert [e.response for e in exs] == ["calling get_weather", "18C and sunny", "no forecast"]
    assert [len(e.messages) for e in exs] == [2, 4, 6]
    assert exs[1].messages[-1] == {"role": "tool", "content": "18C, sunny"}
    assert all(m["role"] != "assistant" or m["content"] != e.response for e in exs for m in e.messages)
    last = read_jsonl(p, last_turn_only=True)
    assert [e.response for e in last] == ["no forecast"] and len(last[0].messages) == 6


def test_truncation_counts_only_sequences_longer_than_max_length():
    """Two examples of natural lengths L and L + 1 at max_length = L: only the second is cut
    (1 of 2), and both come out L tokens long."""
    tok = build_tiny_tokenizer()
    a = Example(({"role": "user", "content": "1 2>"},), "3")
    b = Example(({"role": "user", "content": "1 2>"},), "34")
    L = len(sft_ids(tok, a)[0])
    assert len(sft_ids(tok, b)[0]) == L + 1  # one more response character: one more token
    counts, msgs = {}, []
    seqs = sft_seqs(tok, [a, b], max_length=L, log=msgs.append, counts=counts)
    assert counts["truncated"] == 1 and [len(ids) for ids, _ in seqs] == [L, L]
    assert msgs and msgs[0].startswith("[data] 1 of 2 examples truncated")
    counts = {}
    sft_seqs(tok, [a], max_length=L, log=msgs.append, counts=counts)
    assert counts["truncated"] == 0  # exactly max_length: nothing was cut


def test_heldout_split_is_capped_at_n_heldout(tmp_path):
    """40 lines, heldout_frac 0.5 would hold out 20; n_heldout = 3 caps it: the last 3 lines are
    held out (answers 37, 38, 39) and the first 37 train."""
    p = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(40)])
    d = load_data(SFTConfig(data=str(p), heldout_frac=0.5, n_heldout=3))
    assert [e.answer for e in d["heldout"]] == ["37", "38", "39"]
    assert len(d["sft"]) == 37 and d["sft"][-1].answer == "36"


def test_the_answer_is_read_from_the_end_of_a_long_response():
    """A long response that starts with '#### 3' and ends with 'the answer is 8': only the last
    MAX_REWARD_TEXT characters are read, and the '#### 3' lies before them, so the answer is 8."""
    text = "#### 3\n" + "thinking. " * (MAX_REWARD_TEXT // 5) + "so the answer is 8"
    assert len(text) > 2 * MAX_REWARD_TEXT
    assert extract_final_number(text) == "8"
    ex = Example(({"role": "user", "content": "q"},), None, "8")
    assert ex.reward(text) == 1.0


def test_default_reward_weights_are_one_each_and_summed(tmp_path, monkeypatch):
    """Two functions returning 0.25 and 0.5 with no --reward-weights: weights (1, 1), reward
    0.25 + 0.5 = 0.75 per completion (an average would give 0.375)."""
    (tmp_path / "consts.py").write_text(
        "def quarter(completions, **kw):\n    return [0.25] * len(completions)\n"
        "def half(completions, **kw):\n    return [0.5] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    exs = [Example(({"role": "user", "content": "q"},), None, "1")]
    r = Rewards.of(GRPOConfig(reward=("consts:quarter", "consts:half")), exs)
    assert r.weights == (1.0, 1.0)
    assert r(exs, [["a", "b"]]) == [[0.75, 0.75]]
