"""Every setting of every stage, walked field by field: it can be set in the run YAML (through
hrlaif.harness.config.load_config) and with its `hrlaif <command>` flag (through the real parser), both
give the same default, and a bad value derived from the field's type and constraints gets the
same one-line error from both (`ppo.steps: ...` vs `--steps: ...`). Fields the pipeline fills
in are refused in YAML and accepted on the command line. No model is loaded."""
from __future__ import annotations

import dataclasses
import importlib
import typing

import pytest
import yaml

from hrlaif.core.errors import UserError
from hrlaif.core.settings import default_of, fields_of, flag
from hrlaif.evalsets.config import EvalConfig
from hrlaif.harness.cli import COMMANDS, parse_args
from hrlaif.harness.config import load_config
from hrlaif.judges.config import JudgeConfig
from hrlaif.trainers.configs import LabelConfig, PPOConfig, RMConfig, SampleConfig, SFTConfig
from hrlaif.trainers.feedback.redteam_stage import RedteamConfig

# (run-config section, command, its required flags, dataclass, flag prefix)
LABEL_ARGS = ["--samples", "s.jsonl", "--mode", "basic", "--out", "o"]
SECTIONS = [
    ("sft", "sft", ["--out", "o"], SFTConfig, ""),
    ("sample", "sample", ["--out", "o"], SampleConfig, ""),
    ("label", "label", LABEL_ARGS, LabelConfig, ""),
    ("judge", "label", LABEL_ARGS, JudgeConfig, "judge"),
    ("reward_model", "train-rm", ["--labels", "l.jsonl", "--out", "o"], RMConfig, ""),
    ("ppo", "ppo", ["--model", "m", "--reward-model", "r", "--out", "o"], PPOConfig, ""),
    ("eval", "eval", [], EvalConfig, ""),
    ("eval_judge", "eval", [], JudgeConfig, "judge"),  # `hrlaif eval`'s one judge is the evaluation judge
    ("redteam", "redteam", ["--out", "o"], RedteamConfig, ""),
    ("harm_judge", "redteam", ["--out", "o"], JudgeConfig, "judge"),
]
REQUIRED = {"sft": {"out"}, "sample": {"out"}, "redteam": {"out"}, "label": {"samples", "mode", "out"},
            "reward_model": {"labels", "out"},
            "ppo": {"model", "reward_model", "out"}}
CASES = [pytest.param(s, cmd, req, cls, pre, f, id=f"{cmd}:{s}.{f.name}")
         for s, cmd, req, cls, pre in SECTIONS for f in fields_of(cls)]
USER = [c for c in CASES if not c.values[5].metadata["pipeline"]]
PIPELINE = [c for c in CASES if c.values[5].metadata["pipeline"]]
# Values with a meaning beyond their type (and the cross-field rule batch_size % mini_batch_size).
SPECIAL = {"url": "http://127.0.0.1:1/v1", "toxicity_classifier": "hf:some/classifier", "mode": "hybrid",
           "batch_size": 16, "mini_batch_size": 2, "benchmarks": ["mmlu"], "drift_benchmarks": ["mmlu"],
           "verifiable": ["math"], "max_gen_toks": {"gsm8k": 7}, "device": "cpu"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    (root / "f.jsonl").write_text('{"id": "a"}\n')
    (root / "data" / "redteam").mkdir(parents=True)
    (root / "data" / "redteam" / "hh_harmless_test.jsonl").write_text("")
    return root


def _hint(cls, f):
    return typing.get_type_hints(cls)[f.name]


def _base(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, type(int | None)) and len(args) == 1 else tp


def good_value(cls, f, files):
    """A valid value that differs from the default."""
    check = f.metadata.get("check")
    name = getattr(check, "__name__", "")
    if name == "existing_file":
        return str(files / "f.jsonl")
    if name in ("existing_dir", "_hh_file"):
        return str(files / "data")
    if f.name in SPECIAL:
        return SPECIAL[f.name]
    tp, default = _base(_hint(cls, f)), default_of(f)
    choices = f.metadata.get("choices")
    if typing.get_origin(tp) is list:
        return [choices[0]] if choices else [str(files)]
    if choices:
        return next(c for c in choices if c != default)
    if tp is bool:
        return not default if default is not None else True
    if tp is int:
        return 5 if default is None else default + 1
    if tp is float:
        return default / 2 if default else 0.5
    return "x"


def bad_value(cls, f):
    """(YAML value, CLI text) that break the field's type or constraints; CLI text None when no
    command line can say it (a bool flag takes no value; any text is a string)."""
    meta, tp = f.metadata, _base(_hint(cls, f))
    name = getattr(meta.get("check"), "__name__", "")
    if name in ("existing_file", "existing_dir", "_hh_file"):
        return "/no/such/path", "/no/such/path"
    if f.name in ("benchmarks", "drift_benchmarks"):
        return ["nope"], "nope"
    if typing.get_origin(tp) is dict:
        return {"gsm8k": "x"}, "gsm8k=x"
    if meta.get("choices"):
        return (["zzz"], "zzz") if typing.get_origin(tp) is list else (99, "99") if tp is int else ("zzz", "zzz")
    if tp is bool:
        return "maybe", ("maybe" if _hint(cls, f) is not bool else None)
    if tp in (int, float):
        if meta.get("min") is not None:
            return meta["min"] - 1, str(meta["min"] - 1)
        if meta.get("max") is not None:
            return meta["max"] + 1, str(meta["max"] + 1)
        if meta.get("check") is not None:  # greater_than(0), two or more: the bound itself
            return (0, "0") if f.name != "k" else (1, "1")
        return "abc", "abc"
    if f.name == "toxicity_classifier":
        return "bert", "bert"
    return 5, None  # free text: only YAML can give a non-string


def cli_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def cli_args(f, prefix, value) -> list[str]:
    if isinstance(value, bool) and f.type in (bool, "bool"):  # a switch, not a tri-state
        return [flag(f.name, prefix) if value else "--no-" + flag(f.name, prefix)[2:]]
    return [flag(f.name, prefix), cli_text(value)]


def from_cli(command, required, cls, argv):
    _, args = parse_args([command, *required, *argv])
    made = importlib.import_module(COMMANDS[command][0]).configs(args)
    return next(c for c in (made if isinstance(made, tuple) else (made,)) if isinstance(c, cls))


def from_yaml(tmp_path, section, data):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({section: data} if data is not None else {}))
    return load_config(p)


def error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("section,command,required,cls,prefix,f", USER)
def test_user_setting_from_yaml_and_cli(tmp_path, files, section, command, required, cls, prefix, f):
    # the same default both ways (a required flag has none)
    yaml_default = getattr(getattr(from_yaml(tmp_path, section, None), section), f.name)
    cli_default = getattr(from_cli(command, required, cls, []), f.name)
    assert yaml_default == cli_default == getattr(cls(), f.name)
    # a new value reaches the config both ways
    value = good_value(cls, f, files)
    assert value != yaml_default
    assert getattr(getattr(from_yaml(tmp_path, section, {f.name: value}), section), f.name) == value
    assert getattr(from_cli(command, required, cls, cli_args(f, prefix, value)), f.name) == value
    # a bad value: one line naming the key, the same problem both ways
    bad_yaml, bad_cli = bad_value(cls, f)
    y = error(lambda: from_yaml(tmp_path, section, {f.name: bad_yaml}))
    assert y.startswith(f"{section}.{f.name}")
    if bad_cli is not None:
        c = error(lambda: from_cli(command, required, cls, [flag(f.name, prefix), bad_cli]))
        assert c.replace(flag(f.name, prefix), "KEY", 1) == y.replace(f"{section}.{f.name}", "KEY", 1)


@pytest.mark.parametrize("section,command,required,cls,prefix,f", PIPELINE)
def test_pipeline_setting_refused_in_yaml_accepted_on_cli(tmp_path, files, section, command, required, cls,
                                                          prefix, f):
    value = good_value(cls, f, files)
    assert error(lambda: from_yaml(tmp_path, section, {f.name: value})) == \
        f"{section}.{f.name} is set by the pipeline, not in the run config"
    argv = [a for a in required]
    if f.name in REQUIRED.get(section, ()):  # replace the required flag's placeholder
        i = argv.index(flag(f.name, prefix))
        del argv[i:i + 2]
    got = getattr(from_cli(command, argv, cls, cli_args(f, prefix, value)), f.name)
    assert got == value
    if f.name not in REQUIRED.get(section, ()) and (section, f.name) != ("eval", "out"):
        assert getattr(from_cli(command, required, cls, []), f.name) == default_of(f)


def test_eval_out_defaults_to_a_time_stamped_dir():
    assert from_cli("eval", [], EvalConfig, []).out.startswith("runs/eval-")


def test_cross_field_rule_worded_alike(tmp_path):
    y = error(lambda: from_yaml(tmp_path, "ppo", {"mini_batch_size": 3}))
    c = error(lambda: from_cli("ppo", SECTIONS[5][2], PPOConfig, ["--mini-batch-size", "3"]))
    assert y == "ppo.mini_batch_size: must divide batch_size 8 (got 3)"
    assert c == "--mini-batch-size: must divide batch_size 8 (got 3)"


def test_every_section_is_walked():
    from hrlaif.harness.config import RunConfig

    sections = {f.name: typing.get_type_hints(RunConfig)[f.name] for f in dataclasses.fields(RunConfig)
                if dataclasses.is_dataclass(typing.get_type_hints(RunConfig)[f.name])}
    assert {s: c for s, _, _, c, _ in SECTIONS} == sections
    assert len(USER) > 100 and len(PIPELINE) > 15


@pytest.mark.parametrize("command", sorted({cmd for _, cmd, _, _, _ in SECTIONS}))
def test_help_names_every_flag_with_its_doc(command, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for _, cmd, _, cls, prefix in SECTIONS:
        if cmd == command:
            for f in fields_of(cls):
                assert flag(f.name, prefix) in text
                assert " ".join(f.metadata["help"].split())[:30] in text, f.name
