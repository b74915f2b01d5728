"""SPEC section 3, item 1, for every row of the norm table (tests/norms/norm_cases.py).

float64 throughout, so the identities hold to round-off. Inputs come in every
kind of norm_cases.KINDS (Gaussian, small integers with ties and zeros, sparse,
rank one, flat spectrum, one tiny block). In the unit-maximizer test hypothesis
draws the shape, batch, kind and seed: 25 examples per norm row (750 in all)
under the "ci" profile, 500 per row under NORMOPT_HYPOTHESIS=thorough; the
other tests loop over the kinds and shapes deterministically.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from norm_cases import (
    CASE_IDS,
    CASES,
    KINDS,
    NormCase,
    add,
    entry,
    entry_range,
    extremal_for,
    fro,
    inner,
    is_zero,
    max_abs_diff,
    random_elem,
    scale,
    stack,
    zeros_elem,
)

from normopt import norms as N

# The root conftest seeds torch in a function-scoped autouse fixture; every example
# here builds its own generator, so sharing that fixture across examples is harmless.
shared = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

by_case = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def close(actual: torch.Tensor, expected, rtol: float = 1e-9, atol: float = 1e-12, msg: str = ""):
    """|actual - expected| <= atol + rtol |expected|, elementwise (torch.testing.assert_close
    costs ~20 ms a call here, too much inside hypothesis loops)."""
    actual = actual.double()
    expected = torch.as_tensor(expected, dtype=torch.float64).expand_as(actual)
    err = (actual - expected).abs() - (atol + rtol * expected.abs())
    if not bool((err <= 0).all()):
        raise AssertionError(f"{msg}\nactual {actual.tolist()}\nexpected {expected.tolist()}")


def draw_elem(data, case: NormCase, batch_choices=((), (3,)), kinds=KINDS):
    norm = case.make()
    shape = data.draw(st.sampled_from(case.shapes), label="shape")
    batch = data.draw(st.sampled_from(batch_choices), label="batch")
    kind = data.draw(st.sampled_from(kinds), label="kind")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    return norm, shape, random_elem(norm, shape, batch, kind, seed)


def test_every_registered_norm_has_a_row():
    covered = {type(c.make()).name for c in CASES}
    assert set(N.names()) <= covered, (
        f"norms without a row in norm_cases.CASES: {set(N.names()) - covered}"
    )


@by_case
@shared
@given(data=st.data())
def test_dualize_is_a_unit_maximizer(case, data):
    """||dualize(g)|| = 1 and <g, dualize(g)> = ||g||_dual (both 0 for g = 0)."""
    norm, _, g = draw_elem(data, case)
    d = norm.dualize(g)
    size = float(fro(norm, g).max()) + 1.0
    close(norm.norm(d), (~is_zero(norm, g)).double(), msg="norm(dualize(g)) != 1")
    close(
        inner(norm, g, d),
        norm.dual_norm(g),
        atol=1e-12 * size,
        msg="<g, dualize(g)> != dual_norm(g)",
    )


@by_case
def test_holder_inequality(case):
    """<g, t> <= ||g||_dual ||t|| for random t, and for t near the maximizer; g of every kind."""
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        for j, kind in enumerate(KINDS):
            g = random_elem(norm, shape, (), kind, seed=31 * k + j)
            t = random_elem(norm, shape, (64,), "gauss", seed=1000 + 31 * k + j)
            near = add(
                norm,
                stack(norm, [norm.dualize(g)] * 16),
                scale(norm, entry_range(norm, t, 16), 1e-3),
            )
            dual = norm.dual_norm(g)
            for ts in (t, near):
                n = len(norm.norm(ts))
                lhs = inner(norm, stack(norm, [g] * n), ts)
                rhs = dual * norm.norm(ts)
                excess = float((lhs - rhs - 1e-10 * (rhs.abs() + 1.0)).max())
                assert excess <= 0, f"{kind} {shape}: Hölder violated by {excess:.3e}"


@by_case
@pytest.mark.parametrize("kind", ["gauss", "ints", "rank1"])
def test_homogeneity_and_scale_invariance(case, kind):
    """||c x|| = |c| ||x|| and ||c g||_dual = |c| ||g||_dual for c in +-[1e-3, 1e3];
    dualize(c g) = dualize(g) for c > 0 (ties may pick another maximizer, which must still be
    one)."""
    norm = case.make()
    cs = torch.tensor(
        [1e-3, 0.37, 1.0, 5.5, 1e3, -1e-3, -2.0, -1e3], dtype=torch.float64
    )  # c > 0 first
    for k, shape in enumerate(case.shapes):
        x = random_elem(norm, shape, (), kind, seed=k)
        xs = scale(norm, stack(norm, [x] * len(cs)), cs)
        close(norm.norm(xs), cs.abs() * norm.norm(x), atol=1e-300)
        close(norm.dual_norm(xs), cs.abs() * norm.dual_norm(x), atol=1e-300)
        pos = cs > 0
        d_c = norm.dualize(entry_range(norm, xs, int(pos.sum())))
        d_1 = stack(norm, [norm.dualize(x)] * int(pos.sum()))
        if max_abs_diff(norm, d_c, d_1) > 1e-9:
            assert kind != "gauss", "dualize(c g) != dualize(g) for a generic g"
            xb = stack(norm, [x] * int(pos.sum()))
            close(norm.norm(d_c), (~is_zero(norm, xb)).double())
            close(inner(norm, xb, d_c), norm.dual_norm(xb), atol=1e-12 * (float(fro(norm, x)) + 1))


@by_case
def test_dual_of_dual_and_dual_norm(case):
    """dual().dual() is the norm again; dual_norm is dual().norm and vice versa."""
    norm = case.make()
    dual = norm.dual()
    twice = dual.dual()
    assert type(twice) is type(norm)
    assert twice == norm, f"{norm!r}.dual().dual() = {twice!r}"
    for k, shape in enumerate(case.shapes):
        x = random_elem(norm, shape, (5,), "gauss", seed=k)
        close(dual.norm(x), norm.dual_norm(x), msg="dual().norm != dual_norm")
        close(dual.dual_norm(x), norm.norm(x), msg="dual().dual_norm != norm")
        close(twice.norm(x), norm.norm(x))
        close(twice.dual_norm(x), norm.dual_norm(x))


@by_case
@pytest.mark.parametrize("kind", ["gauss", "rank1"])
def test_batch_matches_loop(case, kind):
    """A batch (with a zero entry) gives what a loop over its entries gives; 2-D batches too."""
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        x = random_elem(norm, shape, (4,), kind, seed=10 + k)
        x = stack(
            norm, [entry(norm, x, 0), entry(norm, x, 1), zeros_elem(norm, shape), entry(norm, x, 3)]
        )
        for fn in ("norm", "dual_norm", "dualize"):
            batched = getattr(norm, fn)(x)
            items = [getattr(norm, fn)(entry(norm, x, i)) for i in range(4)]
            if fn == "dualize":
                looped = stack(norm, items)
                assert max_abs_diff(norm, batched, looped) < 1e-12, f"{fn} batched != looped"
            else:
                close(batched, torch.stack(items), msg=f"{fn} batched != looped")
        # two batch dims: (2, 2) gives the same as the flat batch of 4
        x2 = random_elem(norm, shape, (2, 2), kind, seed=20 + k)
        flat = stack(norm, [entry(norm, entry(norm, x2, i), j) for i in range(2) for j in range(2)])
        close(norm.dual_norm(x2).reshape(4), norm.dual_norm(flat))
        d2 = norm.dualize(x2)
        d_flat = stack(
            norm, [entry(norm, entry(norm, d2, i), j) for i in range(2) for j in range(2)]
        )
        assert max_abs_diff(norm, d_flat, norm.dualize(flat)) < 1e-12


def test_modular_sum_picks_its_block_per_batch_entry():
    """Regression: ModularSum.dualize chose one block for the whole batch (the batch max)."""
    ms = N.ModularSum([N.L2(), N.L2()])
    a = torch.tensor([[3.0, 0.0], [0.1, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    da, db = ms.dualize([a, b])
    assert torch.equal(da, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(db, torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64))


# Norms with non-default arguments, for the spec / registry round trip.
CONFIGURED = [
    N.Spectral("polar_express", 6),
    N.Spectral("newton_schulz", 5),
    N.RMSToRMS("gram_newton_schulz", 4),
    N.ConvSpectral("newton_schulz", 3),
    N.Schatten(4),
    N.KyFan(3),
    N.KyFanDual(5),
    N.Transposed(N.Spectral("polar_express", 7)),
    N.Modular(
        [N.Transposed(N.ColumnRMS()), N.RMSToRMS("newton_schulz", 5), N.LInf()], [1.0, 0.5, 2.0]
    ),
    N.ModularSum([N.KyFan(2), N.Schatten(3)], [2.0, 1.0]),
]


@pytest.mark.parametrize(
    "norm", [c.make() for c in CASES] + CONFIGURED, ids=[*CASE_IDS, *map(repr, CONFIGURED)]
)
def test_spec_round_trip(norm):
    """spec() is plain JSON; from_spec(spec()) and get(name, **kwargs) rebuild an equal norm."""
    spec = norm.spec()
    assert json.loads(json.dumps(spec)) == spec
    again = N.from_spec(json.loads(json.dumps(spec)))
    assert again == norm and type(again) is type(norm)
    assert hash(again) == hash(norm)
    assert again.spec() == spec
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if not {"norms", "inner"} & kwargs.keys():  # nested specs go through from_spec
        assert N.get(spec["name"], **kwargs) == norm
    assert {norm: 1}[again] == 1  # usable as a dict key


def test_get_normalizes_names_and_passes_norms_through():
    assert N.get("Ky-Fan", k=2) == N.KyFan(2)
    assert N.get(" SPECTRAL ") == N.Spectral()
    s = N.Schatten(3)
    assert N.get(s) is s  # type: ignore[arg-type]
    assert N.from_spec(s) is s


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown norm 'bogus'") as info:
        N.get("bogus")
    for name in N.names():
        assert repr(name) in str(info.value)


def test_get_rejects_bad_arguments():
    with pytest.raises(TypeError, match="name"):
        N.get(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="norm 'spectral'"):
        N.get("spectral", k=2)
    with pytest.raises(ValueError, match="'name' key"):
        N.from_spec({"p": 3})


@by_case
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_input_gives_zero(case, dtype):
    """dualize(0) = 0 (not NaN), also as one entry of a batch; norm(0) = dual_norm(0) = 0."""
    norm = case.make()
    for shape in case.shapes:
        z = zeros_elem(norm, shape, dtype=dtype)
        d = norm.dualize(z)
        assert max_abs_diff(norm, d, z) == 0.0
        assert float(norm.norm(z)) == 0.0 and float(norm.dual_norm(z)) == 0.0
        x = random_elem(norm, shape, (3,), "gauss", seed=5, dtype=dtype)
        x = stack(norm, [entry(norm, x, 0), z, entry(norm, x, 2)])
        d = norm.dualize(x)
        assert max_abs_diff(norm, entry(norm, d, 1), z) == 0.0


def _ascend(norm, x, steps: int = 30):
    """x <- dualize(x) / ||dualize(x)||_F: ascent of the convex dual_norm on the Frobenius sphere
    (dual_norm(y) >= <dualize(x), y>, maximized over the sphere at y = dualize(x) / ||.||_F)."""
    best = norm.dual_norm(x) / fro(norm, x)
    for _ in range(steps):
        d = norm.dualize(x)
        x = scale(norm, d, 1.0 / fro(norm, d).clamp_min(1e-300))
        best = torch.maximum(best, norm.dual_norm(x) / fro(norm, x))
    return best


@by_case
def test_rho_is_an_upper_bound(case):
    """dual_norm(x) <= rho ||x||_F on random x of every kind and after ascent on the sphere."""
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        rho = norm.rho(shape)
        for j, kind in enumerate(KINDS):
            x = random_elem(norm, shape, (32,), kind, seed=100 * k + j)
            keep = ~is_zero(norm, x)
            ratio = (norm.dual_norm(x) / fro(norm, x))[keep]
            assert bool((ratio <= rho * (1 + 1e-10)).all()), (
                f"{kind}: {float(ratio.max())} > rho {rho}"
            )
        x = random_elem(norm, shape, (16,), "gauss", seed=7 + k)
        best = _ascend(norm, x)
        assert float(best.max()) <= rho * (1 + 1e-10), (
            f"ascent found {float(best.max())} > rho {rho}"
        )


@by_case
def test_rho_is_tight(case):
    """An explicit x attains dual_norm(x) = rho ||x||_F (see norm_cases.extremal_for)."""
    norm = case.make()
    for shape in case.shapes:
        x = extremal_for(norm)(norm, shape)
        ratio = float(norm.dual_norm(x) / fro(norm, x))
        assert ratio == pytest.approx(norm.rho(shape), rel=1e-10), f"shape {shape}"


@pytest.mark.parametrize(
    ("norm", "shape", "fitted"),
    [
        (N.L2(), (3, 4, 5), (60,)),
        (N.LInf(), (7,), (7,)),
        (N.Spectral(), (8, 3, 3, 3), (8, 27)),
        (N.ColumnRMS(), (4, 5), (4, 5)),
        (N.ConvSpectral(), (4, 3, 3, 3), (4, 3, 3, 3)),
    ],
)
def test_fit(norm, shape, fitted):
    assert norm.fit(shape) == fitted
    assert norm.fit(torch.Size(shape)) == fitted


def test_fit_rejects_shapes_that_cannot_carry_the_norm():
    with pytest.raises(ValueError, match="matrix norm"):
        N.Spectral().fit((5,))
    with pytest.raises(ValueError, match="ndim == 4"):
        N.ConvSpectral().fit((4, 3))


def test_a_product_norm_is_not_a_norm_of_one_tensor():
    """Product norms have their own interface: no fit, and a block is one tensor (a nested
    product norm used to be accepted and then failed in dualize)."""
    mod = N.Modular([N.L2()])
    assert isinstance(mod, N.ProductNorm) and not isinstance(mod, N.Norm)
    assert not hasattr(mod, "fit")
    with pytest.raises(ValueError, match="^norms: block 1 is Modular"):
        N.ModularSum([N.KyFan(2), N.Modular([N.L2()], [3.0])])
    assert isinstance(N.from_spec(mod.spec()), N.ProductNorm)
