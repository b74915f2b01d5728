"""normopt._checks: every valid value passes and comes back; every invalid kind raises an
error whose message starts with the argument's name."""

import math

import pytest
import torch

from normopt import _checks as C

# (check, args after the name, value, what comes back)
VALID = [
    (C.check_number, (), 0, 0.0),
    (C.check_number, (), 3, 3.0),
    (C.check_number, (), 2.5, 2.5),
    (C.check_number, (), torch.tensor(0.5), 0.5),
    (C.check_number, (), torch.tensor([2.0]), 2.0),
    (C.check_number, (0.0, 1.0), 1.0, 1.0),
    (C.check_number, (0.0, 1.0, True), 1e-12, 1e-12),
    (C.check_number, (-1.0, 1.0, False, True), -1.0, -1.0),
    (C.check_betas, (), (0.9, 0.999), (0.9, 0.999)),
    (C.check_betas, (), [0, 0.5], (0.0, 0.5)),
    (C.check_bool, (), True, True),
    (C.check_bool, (), False, False),
    (C.check_int, (), 0, 0),
    (C.check_int, (1,), 7, 7),
    (C.check_int, (-2,), -2, -2),
    (C.check_optional_int, (1,), None, None),
    (C.check_optional_int, (1,), 3, 3),
    (C.check_polar_method, (), "svd", "svd"),
    (C.check_polar_method, (), "gram_newton_schulz", "gram_newton_schulz"),
    (C.check_dtype_name, (), None, None),
    (C.check_dtype_name, (), "bfloat16", torch.bfloat16),
    (C.check_dtype_name, (), "float", torch.float32),
]

# (check, args after the name, value, pattern after "name: ")
INVALID = [
    (C.check_number, (), -1, r"expected a value in \[0.0, inf\], got -1"),
    (C.check_number, (), math.nan, "expected a number"),
    (C.check_number, (), math.inf, "expected a finite number"),
    (C.check_number, (), -math.inf, "expected a finite number"),
    (C.check_number, (), True, "expected a number, got True"),
    (C.check_number, (), "1e-3", "expected a number, got '1e-3'"),
    (C.check_number, (), None, "expected a number"),
    (C.check_number, (), [1.0], "expected a number"),
    (C.check_number, (), torch.ones(2), r"expected a number, got a tensor of shape \(2,\)"),
    (C.check_number, (), torch.tensor(math.nan), "expected a number"),
    (C.check_number, (0.0, 1.0), 1.5, r"expected a value in \[0.0, 1.0\], got 1.5"),
    (C.check_number, (0.0, 1.0, True), 0.0, r"expected a value in \(0.0, 1.0\]"),
    (C.check_number, (0.0, 1.0, False, True), 1.0, r"expected a value in \[0.0, 1.0\)"),
    (C.check_betas, (), 0.9, r"expected a pair \(beta1, beta2\)"),
    (C.check_betas, (), (0.9,), "expected a pair"),
    (C.check_betas, (), (0.9, 0.99, 0.999), "expected a pair"),
    (C.check_betas, (), "ab", "expected a pair"),
    (C.check_bool, (), 1, "expected True or False, got 1"),
    (C.check_bool, (), "no", "expected True or False, got 'no'"),
    (C.check_bool, (), None, "expected True or False"),
    (C.check_int, (1,), 0, "expected an integer >= 1, got 0"),
    (C.check_int, (), -1, "expected an integer >= 0, got -1"),
    (C.check_int, (1,), 2.0, "expected an integer >= 1, got 2.0"),
    (C.check_int, (1,), True, "expected an integer >= 1, got True"),
    (C.check_int, (1,), "3", "expected an integer >= 1"),
    (C.check_int, (1,), None, "expected an integer >= 1, got None"),
    (C.check_optional_int, (1,), 0, "expected None or an integer >= 1, got 0"),
    (C.check_optional_int, (1,), True, "expected None or an integer >= 1, got True"),
    (C.check_optional_int, (1,), 1.5, "expected None or an integer >= 1"),
    (C.check_polar_method, (), "qr", r"unknown polar method 'qr'; expected one of \['svd'"),
    (C.check_polar_method, (), None, "unknown polar method None"),
    (C.check_polar_method, (), ["svd"], "unknown polar method"),
    (C.check_dtype_name, (), "bf17", "expected None or a dtype name like 'bfloat16'"),
    (C.check_dtype_name, (), "Tensor", "expected None or a dtype name"),  # a torch name
    (C.check_dtype_name, (), torch.bfloat16, "expected None or a dtype name"),  # not a name
]


def _id(row):
    return f"{row[0].__name__}-{row[2]!r}"


@pytest.mark.parametrize(("check", "args", "value", "expected"), VALID, ids=map(_id, VALID))
def test_valid_values_pass_and_come_back(check, args, value, expected):
    out = check("arg", value, *args)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(("check", "args", "value", "pattern"), INVALID, ids=map(_id, INVALID))
def test_invalid_values_raise_naming_the_argument(check, args, value, pattern):
    with pytest.raises(ValueError, match=rf"^my_arg: {pattern}"):
        check("my_arg", value, *args)


def test_betas_name_the_bad_entry():
    with pytest.raises(ValueError, match=r"^betas\[0\]: expected a value in \[0.0, 1.0\)"):
        C.check_betas("betas", (1.0, 0.9))
    with pytest.raises(ValueError, match=r"^betas\[1\]: expected a number"):
        C.check_betas("betas", (0.9, "x"))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float8_e4m3fn, torch.float32),
        (torch.int64, torch.float32),
        (torch.bool, torch.float32),
        (torch.complex64, torch.complex64),
        (torch.complex128, torch.complex128),
    ],
)
def test_at_least_float32(dtype, expected):
    assert C.at_least_float32(dtype) == expected


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_check_real_tensor():
    x = torch.randn(3, dtype=torch.bfloat16)
    assert C.check_real_tensor("G", x) is x
    for bad, what in [
        ([1.0], "expected a torch.Tensor, got list"),
        (torch.ones(2, dtype=torch.complex64), "complex tensors are not supported"),
        (torch.ones(2, dtype=torch.int64), "expected a floating-point tensor"),
        (torch.eye(2).to_sparse(), "sparse tensors are not supported"),
        (torch.eye(2).to_sparse_csr(), "sparse tensors are not supported"),
    ]:
        with pytest.raises(TypeError, match=rf"^G: {what}"):
            C.check_real_tensor("G", bad)


def test_the_layers_share_one_polar_method_tuple():
    import importlib

    from normopt import linalg

    polar_module = importlib.import_module("normopt.linalg.polar")  # linalg.polar is the function
    assert linalg.POLAR_METHODS is polar_module.POLAR_METHODS is C.POLAR_METHODS


def test_no_package_defines_its_own_copy():
    """The helpers live once: no module of normopt defines a function of the same name."""
    import ast
    from pathlib import Path

    names = {
        "check_number",
        "check_betas",
        "check_bool",
        "check_int",
        "check_polar_method",
        "check_real_tensor",
    }
    root = Path(C.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "_checks.py":
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not defined & names, f"{path.relative_to(root)} defines {defined & names}"
