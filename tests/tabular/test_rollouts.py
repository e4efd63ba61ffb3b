"""Per-seed rollout streams: a 32-bit mixer equal to its definition, uniforms that are uniform and
independent across streams, draws that depend on the stream id and draw count only."""

import random

import numpy as np
import torch
from scipy import stats

from toybench.tabular.rollouts import RolloutStreams, mix32


def lowbias32(x: int) -> int:
    """The mixer in plain Python integers (arbitrary precision: no overflow to avoid)."""
    m = 0xFFFFFFFF
    x &= m
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_mix32_equals_its_definition_on_the_whole_range():
    rng = random.Random(0)
    xs = [0, 1, 2**31 - 1, 2**31, 2**32 - 1] + [rng.getrandbits(32) for _ in range(2000)]
    assert mix32(torch.tensor(xs)).tolist() == [lowbias32(x) for x in xs]


def test_uniforms_are_uniform_and_streams_independent():
    u = RolloutStreams(0, torch.arange(4)).uniforms(500, 8).reshape(4, -1).numpy()
    assert ((u > 0) & (u < 1)).all()
    for row in u:
        assert stats.kstest(row, "uniform").pvalue > 1e-3
    c = np.corrcoef(u)[np.triu_indices(4, 1)]
    assert np.abs(c).max() < 4 / np.sqrt(u.shape[1])  # about 4 standard errors of a null correlation


def test_a_stream_depends_on_its_id_and_draw_only():
    batch, alone = RolloutStreams(5, torch.tensor([9, 3, 7])), RolloutStreams(5, torch.tensor([3]))
    for _ in range(3):  # draw after draw
        torch.testing.assert_close(batch.uniforms(2, 4)[1], alone.uniforms(2, 4)[0], rtol=0, atol=0)
    a, b = RolloutStreams(5, torch.tensor([3])), RolloutStreams(6, torch.tensor([3]))
    assert (a.uniforms(2, 4) != b.uniforms(2, 4)).all()  # the sampler seed matters
    assert (a.uniforms(2, 4) != a.uniforms(2, 4)).all()  # successive draws differ


def test_sample_leaves_follows_the_distribution():
    p = torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(1, 1, 4)
    leaves = torch.cat([RolloutStreams(1, torch.tensor([0])).sample_leaves(p, 20000)])
    freq = np.bincount(leaves.reshape(-1).numpy(), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.015)
    assert leaves.shape == (1, 1, 20000) and freq[1] == 0  # a zero-mass leaf is never drawn
