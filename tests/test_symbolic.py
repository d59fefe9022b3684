"""The sympy derivations of companion.symbolic (chapter "The Gaussian KL in closed form")."""

import sympy as sp

from companion import symbolic


def test_integral_equals_closed_form_general_1d():
    assert sp.simplify(symbolic.kl_normal_1d_by_integration() - symbolic.kl_normal_1d_closed_form()) == 0


def test_integral_equals_closed_form_standard_prior():
    assert sp.simplify(symbolic.kl_normal_1d_by_integration(0, 1) - symbolic.kl_standard_normal_1d_closed_form()) == 0


def test_full_covariance_reduces_to_diagonal_sum():
    diag, means, stds = symbolic.kl_diag_closed_form(3)
    full = symbolic.kl_mvn_closed_form(sp.Matrix(means), sp.diag(*[s**2 for s in stds]), sp.zeros(3, 1), sp.eye(3))
    assert sp.simplify(sp.expand_log(full - diag, force=True)) == 0


def test_full_covariance_1d_equals_general_1d():
    s = symbolic.symbols()
    full = symbolic.kl_mvn_closed_form(sp.Matrix([s["mu"]]), sp.Matrix([[s["sigma"] ** 2]]),
                                       sp.Matrix([s["mu_2"]]), sp.Matrix([[s["sigma_2"] ** 2]]))
    assert sp.simplify(sp.expand_log(full - symbolic.kl_normal_1d_closed_form(), force=True)) == 0


def test_closed_form_is_not_identically_zero():
    """Guards the checks above against a vacuous closed form."""
    assert symbolic.kl_standard_normal_1d_closed_form().subs({symbolic.mu: 1, symbolic.sigma: 1}) == sp.Rational(1, 2)
