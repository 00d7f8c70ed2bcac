"""hrlaif.core.settings: one dataclass field -> YAML key and CLI flag with the same default and errors."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from hrlaif.core.errors import UserError
from hrlaif.core.settings import SettingError, add_arguments, check_fields, from_args, from_mapping, setting


@dataclass
class Demo:
    steps: int = setting(20, "optimizer steps", min=1)
    lr: float = setting(1e-6, "learning rate", min=0)
    estimator: str = setting("k1", "KL estimator", choices=("k1", "k3"))
    clip: float | None = setting(None, "reward clip (none = off)")
    benchmarks: list[str] = setting(default_factory=lambda: ["mmlu"], help="drift benchmarks")
    gen: dict[str, int] = setting(default_factory=dict, help="per-benchmark lengths")
    adaptive: bool = setting(False, "adaptive KL (+-25% steps)")
    batch: int = setting(8, "batch size", min=1)
    mini: int = setting(4, "mini-batch size", min=1)
    out: str = setting("", "output dir", pipeline=True)

    def validate(self):
        if self.batch % self.mini:
            raise SettingError("mini", "must divide batch")


def parse(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    return from_args(Demo, p.parse_args(list(argv)))


def test_defaults_agree():
    assert from_mapping(Demo, {}) == parse() == Demo()


def test_yaml_and_cli_set_the_same_values():
    y = from_mapping(Demo, {"steps": 3, "lr": 1e-5, "estimator": "k3", "clip": 5, "benchmarks": ["gsm8k", "mmlu"],
                            "gen": {"gsm8k": 64}, "adaptive": True, "batch": 6, "mini": 3})
    c = parse("--steps", "3", "--lr", "1e-5", "--estimator", "k3", "--clip", "5", "--benchmarks", "gsm8k,mmlu",
              "--gen", "gsm8k=64", "--adaptive", "--batch", "6", "--mini", "3")
    assert y == c and y.clip == 5.0 and isinstance(y.clip, float)
    assert parse("--clip", "none").clip is None


@pytest.mark.parametrize("key,yaml_value,cli_text,problem", [
    ("steps", 0, "0", "must be >= 1 (got 0)"),
    ("steps", "many", "many", "expected an integer, got 'many'"),
    ("lr", "fast", "fast", "expected a number, got 'fast'"),
    ("estimator", "k2", "k2", "must be one of k1, k3 (got 'k2')"),
    ("mini", 5, "5", "must divide batch"),
])
def test_bad_values_get_the_same_one_line_error(key, yaml_value, cli_text, problem):
    with pytest.raises(UserError) as y:
        from_mapping(Demo, {key: yaml_value}, "ppo")
    with pytest.raises(UserError) as c:
        parse("--" + key.replace("_", "-"), cli_text)
    assert str(y.value) == f"ppo.{key}: {problem}"
    assert str(c.value) == f"--{key}: {problem}"


def test_unknown_and_pipeline_keys():
    with pytest.raises(UserError, match=r"unknown config key 'ppo.stepz' \(allowed here: .*steps"):
        from_mapping(Demo, {"stepz": 1}, "ppo")
    with pytest.raises(UserError, match="ppo.out is set by the pipeline"):
        from_mapping(Demo, {"out": "x"}, "ppo")
    assert parse("--out", "d").out == "d"  # the CLI of a single trainer sets it


def test_help_shows_doc_and_default():
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    text = p.format_help()
    assert "--estimator {k1,k3}" in text and "KL estimator (default: k1)" in text
    assert "--benchmarks A,B,..." in text and "(default: mmlu)" in text
    assert "adaptive KL (+-25% steps) (default: false)" in text  # a % in a doc is text, not a format


def test_prefix_and_aliases():
    @dataclass
    class Judge:
        url: str | None = setting(None, "endpoint")
        workers: int = setting(2, "concurrent requests", min=1, aliases=("--workers",))
        tri: bool | None = setting(None, "on, off or auto")

    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    add_arguments(p, Judge, prefix="judge")
    args = p.parse_args(["--steps", "3", "--judge-url", "http://x", "--workers", "4", "--judge-tri", "off"])
    assert from_args(Judge, args, prefix="judge") == Judge(url="http://x", workers=4, tri=False)
    assert from_args(Demo, args).steps == 3
    assert from_args(Judge, p.parse_args(["--judge-tri", "auto"]), prefix="judge").tri is None
    with pytest.raises(UserError, match=r"^--judge-workers: must be >= 1 \(got 0\)$"):
        from_args(Judge, p.parse_args(["--judge-workers", "0"]), prefix="judge")


def test_check_fields_holds_python_built_configs_to_the_same_rules():
    with pytest.raises(UserError, match=r"^steps: must be >= 1 \(got 0\)$"):
        check_fields(Demo(steps=0))
