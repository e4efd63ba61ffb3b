"""Checks of a run's data and reward functions, before any model loads (every ``llm`` command).

Why here: a bad data line or a broken reward function found after the model has loaded (minutes
for a real model) or in the middle of training is a traceback and a wasted run. :func:`validate_run`
runs right after argument validation (:func:`llm.config.resolve`) in :mod:`llm.cli`, and every
problem is a ``ValueError`` of one line naming ``<file>:<line>`` or the reward function and what it
returned; the CLI prints it and exits 2, with nothing trained or written.

What is checked
- Every data file (``data``, ``heldout_data``) is read in full (:func:`llm.data.read_jsonl`):
  UTF-8, one JSON object a line, the schema, not empty. ``n_train`` limits what trains, not what
  is checked.
- SFT (``llm sft``; ``llm pipeline`` with a method other than ``none``) trains on an assistant turn
  or completion: every training example must have one (a prompt-only line is for grpo / eval).
- GRPO needs prompts and a reward; eval needs a reward (``--reward`` or the data's verifier).
- Every reward function that the command will call is called once, on the first
  :data:`PROBE_EXAMPLES` examples with the dataset's columns and two completions each (the
  example's own response, or ``""``, and :data:`PROBE_TEXT`): an exception, NaN/inf, a non-number
  or the wrong number of values is reported (:class:`llm.rewards.RewardError`); ``None`` is valid
  (the function does not score that completion, TRL's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

from llm.config import EvalConfig, GRPOConfig, PipelineConfig, RunConfig, SFTConfig
from llm.data import Example, arith_splits, load_data
from llm.rewards import Rewards
from toybench.methods import Method

PROBE_EXAMPLES = 4
PROBE_TEXT = "The answer is 0."  # an arbitrary model output every reward function must handle


def _stages(cfg: RunConfig) -> tuple[bool, bool, bool]:
    """``(sft, grpo, eval)``: the stages ``cfg``'s command runs."""
    if isinstance(cfg, PipelineConfig):
        return any(Method.parse(m).kind != "none" for m in cfg.methods), True, True
    return isinstance(cfg, SFTConfig), isinstance(cfg, GRPOConfig), isinstance(cfg, EvalConfig)


def _data(cfg: RunConfig) -> dict[str, list[Example]]:
    """The splits the run will use, every file read in full; OS errors as one line."""
    if cfg.data == "arith":  # generated: nothing to read, a few puzzles to probe rewards with
        return arith_splits(cfg.seed, PROBE_EXAMPLES, PROBE_EXAMPLES, style="compact")
    try:
        return load_data(cfg)
    except OSError as e:
        raise ValueError(f"{e.filename}: cannot read ({e.strerror})") from None


def check_sft_examples(examples: Sequence[Example]) -> None:
    """Every example SFT trains on has a response; else ValueError naming its file:line."""
    for e in examples:
        if e.response is None:
            raise ValueError(
                f"{e.source or 'an example'}: no assistant turn or completion to train on; SFT needs "
                "one on every training line (a prompt-only line is for grpo and eval)"
            )


def probe_rewards(rewards: Rewards, examples: Sequence[Example]) -> None:
    """Call every reward function once on a few completions; RewardError naming it otherwise."""
    exs = list(examples[:PROBE_EXAMPLES])
    completions = [[e.response or "", PROBE_TEXT] for e in exs]
    try:
        rewards.per_function(exs, completions)
    except ValueError as e:
        where = exs[0].source.rsplit(":", 1)[0] if exs[0].source else "the generated prompts"
        raise type(e)(f"{e} (probed on {2 * len(exs)} completions of {where}, before training)") from None


def _need_reward(cfg: RunConfig, examples: Sequence[Example], what: str) -> Rewards:
    rewards = Rewards.of(cfg, examples)
    if rewards is None:
        raise ValueError(
            f"data={cfg.data!r} has no verifier for {what}: give it an 'answer' column or pass "
            "--reward module:function"
        )
    return rewards


def validate_run(cfg: RunConfig) -> None:
    """Read the run's data in full and probe its reward functions (see the module docstring).

    Raises:
        ValueError: one line naming the file and line, or the reward function and what it returned.
    """
    sft, grpo, evaluate = _stages(cfg)
    data = _data(cfg)
    if sft:
        check_sft_examples(data["sft"])
        held = [e for e in data["heldout"] if e.response is not None]
        if held and (rewards := Rewards.of(cfg, held)) is not None:  # the held-out reward probe
            probe_rewards(rewards, held)
    if grpo:
        if not data["rl"]:
            raise ValueError(f"data={cfg.data!r} has no prompts for GRPO ('text' lines have none)")
        probe_rewards(_need_reward(cfg, data["rl"], "GRPO"), data["rl"])
    if evaluate:
        probe_rewards(_need_reward(cfg, data["eval"], "evaluation"), data["eval"])


__all__ = ["PROBE_EXAMPLES", "PROBE_TEXT", "check_sft_examples", "probe_rewards", "validate_run"]
