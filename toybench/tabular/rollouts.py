"""Per-seed rollout streams for sampled RL: every seed draws its own uniforms, whatever batch it runs in.

A counter-based generator: the k-th uniform of draw t of stream s is a hash of (sampler seed, s, t, k)
(a 32-bit integer mixer applied in turn to each key, computed on int64 tensors without overflow), so
a seed's rollouts depend only on its own stream id and on how many draws it has made: seed s alone
gives the same samples as seed s in any batch, and every method run on the same seeds meets the same
uniforms (common random numbers). Leaves are drawn by inverting each prompt's cumulative distribution
(``sample_leaves``), so two policies that put similar mass on a leaf tend to sample it on the same
draws: method differences are not swamped by sampling noise.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_M16 = 0xFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for uint32 values held in int64, in 16-bit halves (no int64 overflow)."""
    lo, hi = x & _M16, x >> 16
    return (lo * c + (((hi * c) & _M16) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (the 'lowbias32' mixer: xor-shift, multiply, xor-shift, multiply, xor-shift)
    of int64 tensors holding uint32 values; the result is a uint32 value in int64.

    >>> mix32(torch.tensor([0, 1, 2])).tolist()
    [0, 1753845952, 3507691905]
    """
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class RolloutStreams:
    """One random stream per seed: ``ids`` ([S] ints, e.g. the seeds' own numbers) under a sampler
    ``seed``. Each call of ``uniforms`` / ``sample_leaves`` is the next draw of every stream."""

    def __init__(self, seed: int, ids: torch.Tensor):
        ids = torch.as_tensor(ids, dtype=torch.int64)
        self.key = mix32(ids ^ mix32(torch.tensor(int(seed), dtype=torch.int64)))
        self.draws = 0

    def uniforms(self, *shape: int) -> torch.Tensor:
        """The next draw: uniforms in (0, 1), [S, *shape] float64, the k-th of stream s a hash of
        (seed, s, draw, k)."""
        n = 1
        for d in shape:
            n *= d
        key = mix32(self.key ^ self.draws)[:, None]  # (S, 1)
        h = mix32(key ^ torch.arange(n, dtype=torch.int64))  # (S, n)
        self.draws += 1
        return ((h.double() + 0.5) / 2.0**32).reshape(len(self.key), *shape)

    def sample_leaves(self, p: torch.Tensor, G: int) -> torch.Tensor:
        """G leaves per prompt from ``p`` [S, P, L] (probabilities over leaves), with replacement, by
        inverting each prompt's cumulative distribution at this draw's uniforms: [S, P, G] int64."""
        S, P, L = p.shape
        cdf = p.double().cumsum(-1)
        u = self.uniforms(P, G) * cdf[..., -1:]  # (S, P, G): scaled to the total mass
        return torch.searchsorted(cdf, u, right=True).clamp_(max=L - 1)
