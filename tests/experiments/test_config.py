"""Config: frozen, validated, JSON round-trip, unknown keys rejected, task defaults resolved."""

import dataclasses
import json

import pytest

from normopt.experiments import config as C


def test_frozen_and_defaults():
    cfg = C.CompareConfig()
    assert cfg.task == "shakespeare-char" and cfg.steps is None and cfg.device == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("cls", [C.CompareConfig, C.SweepConfig])
def test_round_trip_through_json(cls, tmp_path):
    cfg = cls(task="digits", optimizers=("adamw", "sgd"), steps=7, lr={"adamw": 1e-3}, seeds=2)
    path = tmp_path / "config.json"
    C.save(cfg, path)
    back = C.load(cls, path)
    assert C.to_dict(back) == C.to_dict(cfg) == json.loads(path.read_text())
    resolved = C.resolve(cfg)
    assert C.to_dict(C.from_dict(cls, json.loads(json.dumps(C.to_dict(resolved))))) == C.to_dict(
        resolved
    )


def test_resolve_fills_task_defaults():
    cfg = C.resolve(
        C.CompareConfig(task="digits", optimizers=("adamw", "torch-muon"), lr={"adamw": 1e-3})
    )
    assert (cfg.steps, cfg.batch_size, cfg.eval_every) == (300, 64, 10)
    assert dict(cfg.lr) == {"adamw": 1e-3, "torch-muon": 0.0125}
    assert cfg.adamw_lr == 1e-3  # the AdamW half of hybrids follows an explicit adamw lr
    assert C.resolve(C.SweepConfig(task="digits", optimizers=("adamw",))).steps == 300


def test_unknown_key_and_wrong_type_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*'stpes'.*valid keys: task"):
        C.from_dict(C.CompareConfig, {"stpes": 3})
    with pytest.raises(ValueError, match="'steps' \\(--steps\\)"):
        C.from_dict(C.CompareConfig, {"steps": "3"})
    with pytest.raises(ValueError, match="unknown key.*'lrs'"):  # a sweep key in a compare config
        C.from_dict(C.CompareConfig, {"lrs": [0.1]})
    bad = tmp_path / "c.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        C.load(C.CompareConfig, bad)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"steps": 0}, "--steps"),
        ({"task": "imagenet"}, "--task"),
        ({"optimizers": ("adamw", "nope")}, "--optimizers"),
        ({"optimizers": ()}, "--optimizers"),
        ({"lr": {"adamw": -1.0}}, "--lr"),
        ({"schedule": "step"}, "--schedule"),
        ({"warmup": 1.5}, "--warmup"),
        ({"device": "tpu"}, "--device"),
        ({"reference": "nope"}, "--reference"),
    ],
)
def test_validation_names_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        C.CompareConfig(**kwargs)


def test_basin_rule():
    assert C.parse_basin("+0.05") == (0.05, False)
    assert C.parse_basin("5%") == (0.05, True)
    assert C.describe_basin("5%") == "within 5% of the best"
    with pytest.raises(ValueError, match="--basin"):
        C.SweepConfig(basin="five")
