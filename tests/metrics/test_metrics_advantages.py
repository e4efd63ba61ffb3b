"""Edge cases of ``toybench.metrics`` and ``toybench.advantages`` (found by mutation testing):
return types, boundaries, half precision, clamps just above 1, single-element batches."""

import math

import numpy as np
import pytest
import torch

from toybench import advantages as A
from toybench import metrics as M


def test_pass_at_k_scalar_is_a_float_and_dtype_errors_name_the_argument():
    assert isinstance(M.pass_at_k(4, 1, 1), float)
    assert isinstance(M.pass_at_k(np.array([4, 5]), 1, 1), np.ndarray)
    for args, name in (((3.0, 1, 1), "n"), ((3, 1.0, 1), "c"), ((3, 1, 1.0), "k")):
        with pytest.raises(ValueError, match=rf"^{name} must be integer"):
            M.pass_at_k(*args)
    with pytest.raises(ValueError, match=r"^k must be <= n \(k=5, n=3\)"):
        M.pass_at_k(3, 1, 5)


def test_pass_at_k_exact_k_checks_and_boundaries():
    assert M.pass_at_k_exact(0.5, 1) == pytest.approx(0.5)
    torch.testing.assert_close(M.pass_at_k_exact(torch.tensor([0.5]), 1), torch.tensor([0.5]))
    for bad in (True, 0, 1.5):
        with pytest.raises(ValueError, match="^k must be an integer >= 1"):
            M.pass_at_k_exact(0.5, bad)
    # p a hair above 1 (inside the 1e-9 tolerance) is clamped to 1, not NaN
    assert M.pass_at_k_exact(np.array([1 + 1e-10]), 3)[0] == 1.0
    assert M.pass_at_k_exact(torch.tensor([1 + 1e-10], dtype=torch.float64), 3)[0].item() == 1.0
    for p in (1.5, -0.1):
        with pytest.raises(ValueError, match="^p_correct must lie in"):
            M.pass_at_k_exact(torch.tensor([p]), 2)
    # p = 1 is log1p(-1) = -inf inside: no floating-point warning escapes
    with np.errstate(divide="raise"):
        assert M.pass_at_k_exact(np.array([1.0]), 2)[0] == 1.0


def test_entropy_and_kl_upcast_half_precision_and_work_on_3d():
    z = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    assert M.entropy(z).dtype == torch.float32
    assert M.entropy(z).shape == (2, 3)
    assert M.kl_divergence(z, z).dtype == torch.float32
    rng = np.random.default_rng(0)
    zp = torch.tensor(rng.normal(size=(2, 3, 4)))
    zq = torch.tensor(rng.normal(size=(2, 3, 4)))
    kl = M.kl_divergence(zp, zq)
    assert kl.shape == (2, 3)
    p = torch.softmax(zp, -1)
    torch.testing.assert_close(kl, (p * (torch.log_softmax(zp, -1) - torch.log_softmax(zq, -1))).sum(-1))
    assert M.kl_divergence(zp.float(), zq).dtype == torch.float32
    with pytest.raises(ValueError, match="^logits must be a torch.Tensor, got ndarray"):
        M.entropy(np.zeros(3))


def test_coverage_boundaries_shapes_and_types():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]])
    correct = np.array([[True, True, False], [True, False, True]])
    out = M.coverage(probs, correct, 0.25)  # strictly above the threshold
    assert isinstance(out, np.ndarray) and out.tolist() == [1, 1]
    assert M.coverage(probs, correct, 0.0).tolist() == [2, 2]
    one = M.coverage(probs[0], correct[0], 0.2)
    assert isinstance(one, int) and one == 2
    assert M.coverage(probs[0], np.array([1.0, 0.0, 1.0]), 0.2) == 2  # 0/1 floats as bools
    t = M.coverage(torch.tensor(probs), torch.tensor(correct), 0.25)
    assert t.tolist() == [1, 1]
    assert M.coverage(torch.tensor(probs), torch.tensor(correct), 0.1).tolist() == [2, 1]


def test_group_advantages_batch_scale_small_batches_and_messages():
    one = A.group_advantages(torch.tensor([[1.0]], dtype=torch.float64), "batch")
    assert one.dtype == torch.float64 and one.tolist() == [[0.0]]
    two = A.group_advantages(torch.tensor([[1.0, 0.0]], dtype=torch.float64), "batch", eps=0.0)
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(two.tolist(), [[0.5 / s, -0.5 / s]])
    with pytest.raises(ValueError, match="^rewards must be a torch.Tensor, got list"):
        A.group_advantages([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"^rewards must have shape \[N, G\], got \(4,\)"):
        A.group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="^scale must be one of"):
        A.group_advantages(torch.zeros(2, 2), scale="std")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: M.pass_at_k(0, 0, 1), "n must be >= 1"),
        (lambda: M.pass_at_k(3, 4, 1), "c must satisfy 0 <= c <= n"),
        (lambda: M.pass_at_k(3, 1, 0), "k must be >= 1"),
        (lambda: M.pass_at_k_exact(np.array([2.0]), 1), "p_correct must lie in [0, 1] (NaN is rejected)"),
        (lambda: M.pass_at_k_exact(torch.tensor([2.0]), 1), "p_correct must lie in [0, 1] (NaN is rejected)"),
    ],
)
def test_metric_error_messages_are_exact(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == message


def test_pass_at_k_exact_tolerance_edge_is_accepted():
    edge = 1 + 1e-9
    assert M.pass_at_k_exact(np.array([edge]), 2)[0] == 1.0
    assert M.pass_at_k_exact(torch.tensor([edge], dtype=torch.float64), 2)[0].item() == 1.0


def test_coverage_torch_3d_counts_over_the_last_axis():
    probs = torch.full((2, 3, 4), 0.25)
    probs[..., 0] = 0.4
    correct = torch.ones(2, 3, 4, dtype=torch.bool)
    assert M.coverage(probs, correct, 0.3).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_group_advantages_default_eps_is_1e_6():
    r = torch.tensor([[1.0, 0.0, 0.0], [2.0, 5.0, 3.0]], dtype=torch.float64)
    for scale in ("group", "batch"):
        assert torch.equal(A.group_advantages(r, scale), A.group_advantages(r, scale, eps=1e-6))


def test_pass_at_k_exact_accepts_float32_rounding_above_one_but_not_more():
    """A float32 probability sum can exceed 1 by a few ulps (the map's batch hit 1 + 1.2e-7);
    that is rounding, clamped to 1; a value clearly above 1 is still rejected."""
    import torch

    from toybench.metrics import pass_at_k_exact

    eps = torch.finfo(torch.float32).eps
    p = torch.tensor([1.0 + eps, 0.5])
    assert torch.allclose(pass_at_k_exact(p, 4), torch.tensor([1.0, 1 - 0.5**4]))
    with pytest.raises(ValueError, match="lie in"):
        pass_at_k_exact(torch.tensor([1.001]), 4)
    with pytest.raises(ValueError, match="lie in"):
        pass_at_k_exact(torch.tensor([1.0 + 1e-6], dtype=torch.float64), 4)
