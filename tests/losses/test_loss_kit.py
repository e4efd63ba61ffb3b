"""The loss-contract kit reports failures instead of crashing: a wrong backward is a ``[gradcheck]``
AssertionError with the largest analytic-vs-numeric difference; stop-gradient losses (DFT, CurioSFT
with a live teacher) get their gradient checked against a declared one instead of a skip."""

import pytest
import torch

from toybench import losses as L
from toybench import testing as K

N = 4


class _LogSoftmaxPick(torch.autograd.Function):
    """-log softmax(z)[y] with a hand-written backward; ``wrong`` drops the softmax term."""

    @staticmethod
    def forward(ctx, z, y, wrong):
        logp = torch.log_softmax(z, -1)
        ctx.save_for_backward(logp, y)
        ctx.wrong = wrong
        return -logp.gather(-1, y[..., None])[..., 0]

    @staticmethod
    def backward(ctx, g):
        logp, y = ctx.saved_tensors
        e_y = torch.nn.functional.one_hot(y, logp.shape[-1]).to(logp.dtype)
        p = torch.zeros_like(logp) if ctx.wrong else logp.exp()
        return g[..., None] * (p - e_y), None, None


def _custom(wrong):
    return lambda z, y: _LogSoftmaxPick.apply(z, y, wrong)


def _onehot(targets, like):
    return torch.nn.functional.one_hot(targets, like.shape[-1]).to(like.dtype)


def dft_grad(logits, targets, **_):
    """d/dz of -sg[pi(y)] log pi(y): pi(y) (pi - e_y) (docs/methods.md §1.6)."""
    p = logits.softmax(-1)
    return p.gather(-1, targets[..., None]) * (p - _onehot(targets, p))


def _dft_without_stop_gradient(z, y):  # -pi(y) log pi(y): its gradient is not DFT's
    logp = L.logprobs(z, y)
    return -logp.exp() * logp


TAU, ALPHA = 1.3, 0.7


def _curio_live(z, y):  # the teacher is the model itself: sg[log q] moves with z
    return L.curio_loss(z, y, z, tau=TAU, alpha=ALPHA)


def curio_live_grad(logits, targets, **_):
    """w (pi - e_y), w = 1 - alpha (log pi(y) - log q(y)), q = softmax(z / tau) (§1.4)."""
    logp = torch.log_softmax(logits, -1)
    pick = lambda a: a.gather(-1, targets[..., None])  # noqa: E731
    w = 1 - ALPHA * (pick(logp) - pick(torch.log_softmax(logits / TAU, -1)))
    return w * (logp.exp() - _onehot(targets, logits))


def test_wrong_custom_backward_fails_naming_gradcheck_and_the_worst_entry():
    with pytest.raises(AssertionError, match=r"^\[gradcheck\]") as e:
        K.check_loss_contract(_custom(wrong=True), max_examples=N)
    msg = str(e.value)
    assert "largest difference" in msg and "d out[" in msg and "/ d logits[" in msg, msg
    assert "analytic" in msg and "numeric" in msg and "grad=" in msg  # points to the declared gradient


def test_right_custom_backward_passes():
    K.check_loss_contract(_custom(wrong=False), max_examples=N)


def test_worst_entry_is_reported_with_its_values():
    """The reported entry is the largest |analytic - numeric|: with the softmax term dropped, the
    analytic d out[b,t] / d z[b,t,v] is -1 at v = y and 0 elsewhere, the numeric pi_v - [v = y]."""
    z = torch.tensor([[[0.0, 0.0, 3.0]]], dtype=torch.float64)  # pi ~ (.047, .047, .907)
    y = torch.tensor([[2]])
    s, _ = K._spec(_custom(True), (), None, None, None, 1e-7, 1e-7, None)
    inp = K.LossInputs(z, y, torch.ones(1, 1, dtype=torch.float64))
    ((ana, num),) = K._jacobians(s, inp, s.live(inp))
    d, at = K._worst_entry(ana, num)
    p = torch.softmax(z[0, 0], -1)
    assert at == (0, 0, 0, 0, 2) and d == pytest.approx(float(p[2]), rel=1e-6)  # ana -1, num p_y - 1


def test_dft_passes_with_its_declared_gradient():
    K.check_loss_contract(L.dft_loss, grad=dft_grad, max_examples=N)


def test_dft_without_its_stop_gradient_fails_the_declared_gradient():
    with pytest.raises(AssertionError, match=r"^\[declared_gradient\].*largest difference"):
        K.check_loss_contract(_dft_without_stop_gradient, grad=dft_grad, max_examples=N)


def test_dft_without_a_declared_gradient_fails_gradcheck_pointing_to_grad():
    with pytest.raises(AssertionError, match=r"^\[gradcheck\].*stop-gradient.*grad="):
        K.check_loss_contract(L.dft_loss, max_examples=N)


def test_curio_with_a_live_teacher_passes_with_its_declared_gradient():
    K.check_loss_contract(_curio_live, grad=curio_live_grad, max_examples=N)
    with pytest.raises(AssertionError, match=r"^\[gradcheck\]"):
        K.check_loss_contract(_curio_live, max_examples=N)
    wrong_alpha = lambda z, y: L.curio_loss(z, y, z, tau=TAU, alpha=2 * ALPHA)  # noqa: E731
    with pytest.raises(AssertionError, match=r"^\[declared_gradient\]"):
        K.check_loss_contract(wrong_alpha, grad=curio_live_grad, max_examples=N)


def test_declared_gradient_arguments():
    with pytest.raises(ValueError, match="grad must be a function"):
        K.check_loss_contract(L.dft_loss, grad="pi(y)(pi - e_y)")
    with pytest.raises(AssertionError, match=r"^\[declared_gradient\].*shape"):
        K.check_loss_contract(L.dft_loss, grad=lambda z, y: z[..., 0], max_examples=2)
    kl = lambda z, y, logp, ref_logp: L.kl_penalty(logp, ref_logp, "k1")  # noqa: E731
    with pytest.raises(AssertionError, match=r"^\[declared_gradient\].*'logp'"):
        K.check_loss_contract(kl, ("logp", "ref_logp"), grad=lambda z, y, **a: 0 * z, max_examples=2)
    K.check_loss_contract(  # k1 = logp - ref_logp: gradient 1 w.r.t. logp, 0 w.r.t. the logits
        kl,
        ("logp", "ref_logp"),
        grad=lambda z, y, logp, ref_logp: {"logits": 0 * z, "logp": torch.ones_like(logp)},
        max_examples=2,
    )
