"""Every sympy derivation is proved at small V and agrees with the numpy closed forms of theory.bandit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from theory import bandit as tb
from theory import symbolic as sym
from toybench.theorems.symbolic import numpy_oracles


@pytest.fixture(scope="module")
def derivations():
    return {d.name: d for d in sym.all_derivations(2)}


def test_all_proved_at_v2(derivations):
    assert len(derivations) == 11
    for name, d in derivations.items():
        assert d.proved, (name, d.residual)


def test_proved_at_v3_cheap_ones():
    for d in (sym.sft_gradient(3), sym.rl_gradient(3), sym.sft_rate_along_rl(3), sym.entropy_change(3, True)):
        assert d.proved, d.name


def test_a_false_identity_is_not_proved():
    # the residual machinery must be able to fail: compare the PG with the SFT gradient's form
    d = sym.rl_gradient(2)
    wrong = sym.residual(list(d.derived), [0 * e for e in d.claimed])
    assert wrong != 0


def test_lambdified_against_numpy(derivations):
    rng = np.random.default_rng(0)
    n, V = 50, 2
    p, pi, r = tb.softmax(rng.normal(size=(n, V))), tb.softmax(rng.normal(size=(n, V))), rng.random((n, V))
    lam = rng.uniform(0.1, 3, n)
    checks = numpy_oracles(p, r, pi, lam, eta=lam)
    for name, (args, oracle) in checks.items():
        d = derivations[name]
        np.testing.assert_allclose(d.derived_fn(*args), oracle, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(d.claimed_fn(*args), oracle, atol=1e-12, err_msg=name)


def test_gift_consistency_solves_beta():
    d = sym.gift_consistency_beta()
    assert d.proved
    assert float(d.derived_fn(np.array(5.0), np.array(2.0))) == pytest.approx(3.0)


def test_escape_time_matches_quadrature():
    m = np.array([0.01, 0.1, 0.4])
    T = sym.escape_time(m, 0.9, 4)
    T_quad = [quad(lambda x: 0.75 / (x**2 * (1 - x) ** 2), mi, 0.9)[0] for mi in m]
    np.testing.assert_allclose(T, T_quad, rtol=1e-10)
    assert np.all(np.diff(T) < 0)
    with pytest.raises(ValueError):
        sym.escape_time(np.array([0.0]), 0.9, 4)


def test_counterexample_kl_value():
    assert float(sym.counterexample_kl()) == pytest.approx(0.130812, abs=5e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="V"):
        sym.sft_gradient(1)
    with pytest.raises(ValueError, match="expected"):
        sym.sft_gradient(2).derived_fn(np.zeros(2))
