"""Softmax policies on the prefix tree of ``toybench.tabular.envs``, producing loss-contract logits.

A policy is a parameter tensor plus a pure map ``params -> node logits [S, P, N, V]`` (one
softmax per internal node of the tree, per prompt, per seed). Two parametrisations:

- tabular: the logits are the parameters (per prompt, per node); the textbook softmax policy
  of Mei et al. (2020), for which exact policy gradients are the object of theorem T5;
- log-linear: ``z[s, x, n, a] = theta[s] . phi[s, x, n, a]`` with one theta per seed shared by
  all prompts, so SFT on some prompts moves the policy on the others.

``sequence_logits`` gathers, for a batch of leaves (complete sequences), the node logits along
each path: the ``[B, T, V]`` layout that every loss in ``toybench.losses`` consumes, with
``targets [B, T]`` the sequence's tokens. Seeds are a leading batch axis everywhere: a
parameter update on the sum of per-seed losses is the per-seed update, vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toybench.tabular.envs import Scenario, TreeGeometry

__all__ = ["Policy", "TabularPolicy", "LogLinearPolicy", "make_policy", "sequence_logits", "take_prompts"]


@dataclass
class Policy:
    """Interface: ``init()`` gives parameters at pi_base; ``node_logits(params)`` gives [S, P, N, V]."""

    scenario: Scenario

    def init(self) -> torch.Tensor:
        raise NotImplementedError

    def node_logits(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prompt_logits(self, params: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """``node_logits(params)[:, prompts]``: [S, P', N, V] (no copy when ``prompts`` is every prompt)."""
        return take_prompts(self.node_logits(params), prompts)

    def path_logits(
        self, params: torch.Tensor, seed: torch.Tensor, prompt: torch.Tensor, nodes: torch.Tensor
    ) -> torch.Tensor:
        """``node_logits(params)[seed, prompt, nodes]``: seed, prompt [U], nodes [U, H] -> [U, H, V]."""
        return self.node_logits(params)[seed[:, None], prompt[:, None], nodes]


class TabularPolicy(Policy):
    """Per-prompt, per-node logits; ``params`` has the shape of ``base_logits`` [S, P, N, V]."""

    def init(self) -> torch.Tensor:
        """A copy of ``base_logits`` stored node-axis-innermost (a transposed view, same values).

        ``TreeGeometry``'s log-softmax runs over the node axis of the transposed logits; with this
        layout that transpose is contiguous (no copy) and its gradient comes back in the same layout,
        so the SGD step is a plain elementwise op. Values and results are bit-identical to a clone.
        """
        return self.scenario.base_logits.transpose(-1, -2).contiguous().transpose(-1, -2)

    def node_logits(self, params: torch.Tensor) -> torch.Tensor:
        return params  # (S, P, N, V)


class LogLinearPolicy(Policy):
    """z = theta . phi with theta [S, d] shared over prompts; needs ``scenario.features``."""

    def __post_init__(self):
        if self.scenario.features is None or self.scenario.theta0 is None:
            raise ValueError("scenario must provide features and theta0 for a log-linear policy")

    def init(self) -> torch.Tensor:
        return self.scenario.theta0.clone()  # (S, d)

    def node_logits(self, params: torch.Tensor) -> torch.Tensor:
        return torch.einsum("spnvd,sd->spnv", self.scenario.features, params)  # (S, P, N, V)

    def _gathered(self, key: tuple, index) -> torch.Tensor:
        """``scenario.features[index]``, gathered once per policy (cached under ``key``)."""
        cache = self.__dict__.setdefault("_features", {})
        if key not in cache:
            cache[key] = self.scenario.features[index]
        return cache[key]

    def prompt_logits(self, params: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """The logits of ``prompts`` only: theta . phi on their features."""
        phi = self._gathered(("prompts", *prompts.tolist()), (slice(None), prompts))  # (S, P', N, V, d)
        return torch.einsum("spnvd,sd->spnv", phi, params)

    def path_logits(self, params, seed, prompt, nodes):
        """The logits along the rows' paths only: theta[seed] . phi[seed, prompt, nodes]."""
        key = ("paths", *(t.numpy().tobytes() for t in (seed, prompt, nodes)))
        phi = self._gathered(key, (seed[:, None], prompt[:, None], nodes))  # (U, H, V, d)
        return torch.einsum("uhvd,ud->uhv", phi, params[seed])


def take_prompts(x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """``x[:, prompts]``, without the copy (and its scatter in backward) when ``prompts`` is every prompt."""
    if len(prompts) == x.shape[1] and torch.equal(prompts, torch.arange(x.shape[1])):
        return x
    return x[:, prompts]


def make_policy(scenario: Scenario) -> Policy:
    """The log-linear policy when the scenario has features, else the tabular one."""
    return LogLinearPolicy(scenario) if scenario.features is not None else TabularPolicy(scenario)


def _path_nodes_tokens(node_logits: torch.Tensor, leaves: torch.Tensor, geometry: TreeGeometry):
    """The nodes and tokens ``(S, P, n, H)`` along the paths of ``leaves`` ``[S, P, n]``, checked
    against ``node_logits`` ``[S, P, N, V]``."""
    S, P = node_logits.shape[:2]
    if leaves.shape[:2] != (S, P):
        raise ValueError(f"leaves must be [S={S}, P={P}, n], got {tuple(leaves.shape)}")
    return geometry.path_nodes[leaves], geometry.path_tokens[leaves]


def sequence_logits(
    node_logits: torch.Tensor, leaves: torch.Tensor, geometry: TreeGeometry
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the logits along the paths of ``leaves``.

    Args:
      node_logits: [S, P, N, V].
      leaves: [S, P, n] leaf indices (n sequences per prompt).
    Returns:
      logits [S*P*n, H, V] and targets [S*P*n, H] (long), the loss-contract layout.
    """
    S, P, N, V = node_logits.shape
    nodes, targets = _path_nodes_tokens(node_logits, leaves, geometry)
    n, H = nodes.shape[2], nodes.shape[3]
    idx = nodes.reshape(S, P, n * H, 1).expand(-1, -1, -1, V)
    logits = torch.gather(node_logits, 2, idx).reshape(S * P * n, H, V)  # (B, T, V)
    return logits, targets.reshape(S * P * n, H)


def sequence_logp(node_logits: torch.Tensor, leaves: torch.Tensor, geometry: TreeGeometry) -> torch.Tensor:
    """log pi(y_t | y_<t) along the paths of ``leaves``: [S*P*n, H], the rows of ``sequence_logits``.

    Equal to ``losses.logprobs(*sequence_logits(node_logits, leaves, geometry))`` (the same log-softmax
    of each node's V logits), computed the cheaper way round: normalise every node once and gather the
    taken tokens when the paths visit more (node, sample) pairs than there are nodes (many samples of a
    small tree: the bandit), else gather the visited nodes first.
    """
    S, P, N, V = node_logits.shape
    nodes, tokens = _path_nodes_tokens(node_logits, leaves, geometry)
    n, H = nodes.shape[2], nodes.shape[3]
    if n * H >= N:
        logp = torch.log_softmax(node_logits, -1)
        flat = (nodes * V + tokens).reshape(S, P, n * H)
        return torch.gather(logp.reshape(S, P, N * V), 2, flat).reshape(S * P * n, H)
    logits, targets = sequence_logits(node_logits, leaves, geometry)
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
