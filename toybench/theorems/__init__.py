"""`toybench theorems`: the SFT/RL non-decoupling theorems checked three ways (closed form, symbolic,
simulation) on the bandit and the token MDP; ``run`` holds the config and the runner."""

from toybench.theorems.run import COLUMNS, TheoremsConfig, run_theorems, theorems_markdown

__all__ = ["COLUMNS", "TheoremsConfig", "run_theorems", "theorems_markdown"]
