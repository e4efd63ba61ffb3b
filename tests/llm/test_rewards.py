"""Plug-in rewards (TRL ``reward_funcs`` style): module:function, file.py:function, weights, built-ins."""

from __future__ import annotations

import pytest

from llm.config import GRPOConfig
from llm.data import Example, arith_splits
from llm.rewards import Rewards, load_reward

PLUGIN = """
def length_reward(completions, prompts, answer, **kwargs):
    assert len(prompts) == len(completions) == len(answer) == len(kwargs["topic"])
    return [float(len(c)) + (kwargs["topic"][i] == "x") for i, c in enumerate(completions)]

def bad(completions, **kwargs):  # None would be "not scored" (TRL); a string is an error
    return ["high"] * len(completions)

def nan(completions, **kwargs):
    return [float("nan")] * len(completions)

def short(completions, **kwargs):
    return [1.0]
"""


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "myrewards.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "myrewards.py"


def _exs():
    return [
        Example(({"role": "user", "content": "p0"},), None, "4", columns={"topic": "x"}),
        Example(({"role": "user", "content": "p1"},), None, "5", columns={"topic": "y"}),
    ]


def test_plugin_gets_completions_and_columns_and_weights_sum(plugin):
    r = Rewards(("myrewards:length_reward", "answer"), (0.5, 2.0))
    got = r(_exs(), [["ab", "#### 4"], ["abc", "5"]])
    # 0.5 * (len + topic==x) + 2 * (final number == answer)
    assert got == [[0.5 * 3, 0.5 * 7 + 2.0], [0.5 * 3, 0.5 * 1 + 2.0]]
    assert load_reward(f"{plugin}:length_reward") is not None  # a file path works too


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("nosuchmodule_xyz:f", "cannot import"),
        ("myrewards:nope", "has no function 'nope'"),
        ("justaname", "neither a built-in"),
        ("missing_dir/f.py:fn", "does not exist"),
    ],
)
def test_bad_reward_specs(plugin, spec, msg):
    with pytest.raises(ValueError, match=msg):
        load_reward(spec)


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("myrewards:bad", "not a number|non-finite"),
        ("myrewards:nan", "not a number|non-finite"),
        ("myrewards:short", "1 values"),
    ],
)
def test_bad_reward_values_name_the_function(plugin, spec, msg):
    with pytest.raises(ValueError, match=f"{spec}.*({msg})"):
        Rewards((spec,), (1.0,))(_exs(), [["a"], ["b"]])


def test_builtins_are_the_default():
    arith_ex = arith_splits(0, 2, 2)["sft"][:1]
    r = Rewards.of(GRPOConfig(), arith_ex)
    assert r.specs == ("arith",) and r(arith_ex, [[arith_ex[0].response, "nonsense"]]) == [[1.0, 0.0]]
    assert Rewards.of(GRPOConfig(), _exs()).specs == ("answer",)
    assert Rewards.of(GRPOConfig(), [Example(({"role": "user", "content": "q"},), "a")]) is None
