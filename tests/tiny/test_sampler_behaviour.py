"""The vectorised sampler keeps each seed's finished flags apart, worked out by hand on a scripted
two-seed stack: a seed whose rows all ended draws nothing more, another seed's rows go on, and a
row that ended is padded while its seed's other row goes on."""

from __future__ import annotations

import torch
from torch import nn

from toybench.tiny.model import GPTStack, generate

EOS, PAD, TOK, V = 2, 0, 3, 5


class _ScriptedStack(GPTStack):
    """A :class:`GPTStack` whose next token is certain: seed 0 says EOS at once (both rows); seed 1
    row 0 says TOK twice then EOS, row 1 always TOK. The sequence length tells the step."""

    def __init__(self, prompt_len: int):
        nn.Module.__init__(self)
        self.cfg = type("Cfg", (), {"block_size": 64})()
        self.p = nn.Parameter(torch.zeros(1))
        self.P = prompt_len

    def forward(self, idx, cache=None):
        S, B, T = idx.shape
        step = T - self.P  # tokens generated so far
        nxt = torch.full((S, B), TOK)
        nxt[0] = EOS
        if step >= 2:
            nxt[1, 0] = EOS
        logits = torch.full((S, B, T, V), -1e9)
        logits[:, :, -1] = logits[:, :, -1].scatter(-1, nxt[..., None], 0.0)
        return logits


def test_each_seed_keeps_its_own_finished_flags():
    """N = 5. Seed 0: [EOS, pad x 4], mask [1, 0, 0, 0, 0] (both rows). Seed 1 row 0:
    [TOK, TOK, EOS, pad, pad], mask [1, 1, 1, 0, 0]; row 1: TOK x 5, mask all 1. Seed 0's generator
    is used for its one draw only: its state equals one multinomial draw of a (2, V) one-hot."""
    P = 2
    prompt = torch.ones(2, 2, P, dtype=torch.long)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    comp, mask = generate(
        _ScriptedStack(P), prompt, 5, eos_id=EOS, pad_id=PAD, generator=gens, use_cache=False
    )
    assert comp[0].tolist() == [[EOS, PAD, PAD, PAD, PAD]] * 2
    assert mask[0].tolist() == [[1, 0, 0, 0, 0]] * 2
    assert comp[1].tolist() == [[TOK, TOK, EOS, PAD, PAD], [TOK] * 5]
    assert mask[1].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    ref = torch.Generator().manual_seed(0)
    torch.multinomial(torch.eye(V)[[EOS, EOS]], 1, generator=ref)
    assert torch.equal(gens[0].get_state(), ref.get_state())
