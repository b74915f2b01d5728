"""SPEC A4 and item 8: constants, Kovalev's schedule, Theorem 2's bound, Lemma 3."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normopt import norms as N
from normopt.theory import (
    constants,
    kovalev_bound,
    kovalev_bound_terms,
    kovalev_schedule,
    lemma3_bound,
)


def _schedule_by_hand(eps, L, rho, sigma, D0):
    # SPEC A4, written out again independently of the implementation.
    if sigma == 0:
        eta, alpha = eps / (16 * L), 1.0
    else:
        eta = min(eps / (16 * L), eps**3 / (256 * rho**2 * sigma**2 * L))
        alpha = min(1.0, eps**2 / (16 * rho**2 * sigma**2))
    K = math.ceil(
        max(
            2048 * L * D0 * rho**2 * sigma**2 / eps**4,
            256 * rho**3 * sigma**3 / eps**3,
            128 * L * D0 / eps**2,
            16 * rho * sigma / eps,
        )
    )
    return eta, alpha, max(K, 1)


def _bound_by_hand(eta, alpha, K, L, rho, sigma, D0):
    return (
        D0 / (eta * K)
        + 2 * rho * sigma / (alpha * K)
        + 2 * math.sqrt(alpha) * rho * sigma
        + 3 * L * eta / 2
        + 2 * L * eta / alpha
    )


CASES = [
    (1.0, 16.0, 4.0, 1.0, 1.0),  # noisy: alpha < 1
    (0.5, 3.0, 1.0, 0.01, 2.0),  # low noise: alpha = 1
    (0.1, 768.0, math.sqrt(768), 1.0, 1.0),  # Muon's constants for 768x3072
    (2.0, 1.0, 1.0, 0.0, 5.0),  # deterministic
    (1e-2, 1e4, 100.0, 3.0, 0.0),  # starting at the optimum
]


@pytest.mark.parametrize("eps,L,rho,sigma,D0", CASES)
def test_schedule_and_bound_match_the_formulas(eps, L, rho, sigma, D0):
    s = kovalev_schedule(eps, L, rho, sigma, D0)
    eta, alpha, K = _schedule_by_hand(eps, L, rho, sigma, D0)
    assert s.eta == pytest.approx(eta, rel=1e-15)
    assert s.alpha == pytest.approx(alpha, rel=1e-15)
    assert s.K == K
    b = kovalev_bound(s.eta, s.alpha, s.K, L, rho, sigma, D0)
    assert b == pytest.approx(_bound_by_hand(eta, alpha, K, L, rho, sigma, D0), rel=1e-13)
    assert b == pytest.approx(s.bound(), rel=1e-15)
    assert math.fsum(kovalev_bound_terms(s.eta, s.alpha, s.K, L, rho, sigma, D0).values()) == b
    assert b <= eps


def test_bound_at_arbitrary_parameters():
    got = kovalev_bound(eta=0.1, alpha=0.25, K=10, L=2.0, rho=3.0, sigma=0.5, delta0=4.0)
    want = 4 / 1 + 2 * 1.5 / 2.5 + 2 * 0.5 * 1.5 + 0.3 + 0.4 / 0.25
    assert got == pytest.approx(want, rel=1e-14)


_pos = st.floats(min_value=-3, max_value=3).map(lambda e: 10.0**e)
_nonneg = st.one_of(st.just(0.0), _pos)


@given(
    eps=st.floats(min_value=-3, max_value=2).map(lambda e: 10.0**e),
    L=st.floats(min_value=-3, max_value=6).map(lambda e: 10.0**e),
    rho=st.floats(min_value=-2, max_value=3).map(lambda e: 10.0**e),
    sigma=_nonneg,
    D0=_nonneg,
)
def test_schedule_makes_the_bound_at_most_eps(eps, L, rho, sigma, D0):
    # SPEC section 3 item 8: the worked-out constant is 31/32.
    s = kovalev_schedule(eps, L, rho, sigma, D0)
    assert 0 < s.alpha <= 1 and s.eta > 0 and s.K >= 1
    assert s.bound() <= (31 / 32) * eps * (1 + 1e-12)


def test_deterministic_case():
    s = kovalev_schedule(eps=0.5, L=2.0, rho=3.0, sigma=0.0, delta0=1.0)
    assert (s.alpha, s.eta, s.K) == (1.0, 0.5 / 32, math.ceil(128 * 2 / 0.25))
    assert s.K_reason.startswith("deterministic")
    # sigma = 0 and D0 = 0: the formula gives K = 0; the schedule takes one step
    assert kovalev_schedule(0.5, 2.0, 3.0, 0.0, 0.0).K == 1


def test_lemma3_matches_formula_and_decays_to_its_floor():
    a, eta, L, rho, sig = 0.1, 0.01, 5.0, 2.0, 0.7
    for k in (0, 1, 7, 100):
        want = (1 - a) ** k * rho * sig + math.sqrt(a) * rho * sig + L * eta / a
        assert lemma3_bound(k, a, eta, L, rho, sig) == pytest.approx(want, rel=1e-15)
    floor = math.sqrt(a) * rho * sig + L * eta / a
    assert lemma3_bound(10_000, a, eta, L, rho, sig) == pytest.approx(floor)
    assert lemma3_bound(0, 1.0, eta, L, rho, 0.0) == pytest.approx(L * eta)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"eps": math.nan}, "eps"),
        ({"L": 0.0}, "L"),
        ({"L": math.inf}, "L"),
        ({"rho": -2.0}, "rho"),
        ({"sigma": -1.0}, "sigma"),
        ({"delta0": -0.1}, "delta0"),
        ({"eps": True}, "eps"),
        ({"eps": "1"}, "eps"),
    ],
)
def test_schedule_validates_arguments(kwargs, name):
    args = {"eps": 0.1, "L": 1.0, "rho": 1.0, "sigma": 1.0, "delta0": 1.0, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}:"):
        kovalev_schedule(**args)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"eta": 0.0}, "eta"), ({"alpha": 1.5}, "alpha"), ({"alpha": 0.0}, "alpha"),
     ({"K": 0}, "K"), ({"K": 2.0}, "K"), ({"sigma": -1.0}, "sigma")],
)  # fmt: skip
def test_bound_validates_arguments(kwargs, name):
    args = {"eta": 0.1, "alpha": 0.5, "K": 10, "L": 1.0, "rho": 1.0, "sigma": 1.0, "delta0": 1.0}
    with pytest.raises(ValueError, match=f"^{name}:"):
        kovalev_bound(**{**args, **kwargs})
    with pytest.raises(ValueError, match="^k:"):
        lemma3_bound(-1, 0.5, 0.1, 1.0, 1.0, 1.0)


def test_schedule_refuses_overflow():
    with pytest.raises(ValueError, match="^eps:"):
        kovalev_schedule(eps=1e-300, L=1e6, rho=1e3, sigma=1e3, delta0=1e3)


@pytest.mark.parametrize(
    "name,rho",
    [
        ("max_entry", math.sqrt(768 * 3072)),  # Adam's geometry
        ("linf", math.sqrt(768 * 3072)),  # on the flattened matrix
        ("frobenius", 1.0),
        ("spectral", math.sqrt(768)),  # Muon's
        ("rms_to_rms", math.sqrt(768 / 3072) * math.sqrt(768)),
    ],
)
def test_constants(name, rho):
    c = constants(name, (768, 3072), Lf=2.0)
    assert c.rho == pytest.approx(rho, rel=1e-14)
    assert float(c.L) == pytest.approx(2.0 * rho**2, rel=1e-14)
    assert c.shape == (768, 3072) and c.Lf == 2.0
    assert constants(N.get(name), [768, 3072], 2.0) == c


def test_constants_validates():
    with pytest.raises(ValueError, match="^Lf:"):
        constants("spectral", (4, 4), Lf=0.0)
    with pytest.raises(ValueError, match="^shape:"):
        constants("spectral", (4, 0))
    with pytest.raises(ValueError, match="matrix norm"):
        constants("spectral", (16,))
    with pytest.raises(ValueError, match="unknown norm"):
        constants("nope", (4, 4))
