"""The exact tabular scales: environments (bandits, reasoning-tree token MDP), softmax policies on
the prefix tree, the seed-vectorised SFT -> RL pipeline and the theorem dynamics."""

from toybench.tabular.bandit import MultiAnswerBandit, SharedBandit
from toybench.tabular.envs import Scenario, TreeGeometry
from toybench.tabular.pipeline import PipelineConfig, escape_frame, evaluate, run_method
from toybench.tabular.policies import LogLinearPolicy, Policy, TabularPolicy, make_policy
from toybench.tabular.tree import ReasoningTree, SharedTree

__all__ = [
    "LogLinearPolicy",
    "MultiAnswerBandit",
    "PipelineConfig",
    "Policy",
    "ReasoningTree",
    "Scenario",
    "SharedBandit",
    "SharedTree",
    "TabularPolicy",
    "TreeGeometry",
    "escape_frame",
    "evaluate",
    "make_policy",
    "run_method",
]
