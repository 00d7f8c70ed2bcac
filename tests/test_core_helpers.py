"""The shared helpers that have one home each: JSON lines, padding, seeding, model loading, verifiable set."""
from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import torch

from hrlaif.core.errors import UserError

# ------------------------------------------------------------------------- JSON lines

def test_jsonl_reader_takes_bom_gzip_and_line_separators_inside_strings(tmp_path):
    from hrlaif.core.store import iter_jsonl_numbered, read_json_records, read_jsonl
    rows = [{"a": 1}, {"b": "x\u2028y\u0085z"}]  # U+2028 / NEL are legal unescaped inside JSON strings
    text = "\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n"
    plain = tmp_path / "d.jsonl"
    plain.write_text(text, encoding="utf-8")
    zipped = tmp_path / "d.jsonl.weird"  # gzip is told by its bytes, not its suffix
    zipped.write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_jsonl(plain) == rows == read_jsonl(zipped) == read_json_records(plain)
    assert [n for n, _ in iter_jsonl_numbered(plain)] == [1, 2]
    array = tmp_path / "d.json"
    array.write_text("\ufeff" + json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert read_json_records(array) == rows


@pytest.mark.parametrize("content,msg", [
    ('{"a": 1}\n{"a": \n', r"d.jsonl:2 is not valid JSONL"),
    ('{"a": 1}\n[1, 2]\n', r"d.jsonl:2 is not a JSON object"),
    (b'{"a": "caf\xe9"}\n', "not UTF-8"),
    ("  \n", "is empty"),
])
def test_data_file_errors_are_one_line_and_name_the_line(tmp_path, content, msg):
    from hrlaif.core.store import read_json_records
    p = tmp_path / "d.jsonl"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=msg) as e:
        read_json_records(p)
    assert "\n" not in str(e.value)


def test_trainer_data_goes_through_the_core_reader(tmp_path):
    """SFT data and prompts: a BOM-prefixed JSONL file loads (the trainers' old reader rejected it
    as invalid JSON on line 1), and a bad line is named by number."""
    from hrlaif.trainers.data_formats import load_instruction_data, load_prompts
    p = tmp_path / "d.jsonl"
    p.write_text("\ufeff" + json.dumps({"instruction": "x", "output": "y"}) + "\n", encoding="utf-8")
    assert load_instruction_data(p)[0]["messages"][-1] == {"role": "assistant", "content": "y"}
    q = tmp_path / "p.jsonl"
    q.write_text(json.dumps({"prompt": "hi"}) + "\n[1]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"p.jsonl:2 is not a JSON object"):
        load_prompts(q)


# ------------------------------------------------------------------------------ tensors

def test_padding_position_ids_and_last_token():
    from hrlaif.core.tensors import last_token_index, left_pad, position_ids, right_pad
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]  # a left-padded row starts at 0
    assert last_token_index(mask).tolist() == [2, 2]
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and last_token_index(mask).tolist() == [2, 0]
    assert right_pad([[], []], pad_id=3)[0].shape == (2, 1)  # never a zero-width batch


# ------------------------------------------------------------------------------ seeding

def test_seed_everything_seeds_python_numpy_and_torch_like_transformers():
    from transformers import set_seed

    from hrlaif.core.seeding import seed_everything

    def draws():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(7)
    ours = draws()
    set_seed(7)  # what SFT and the RM used before: the same streams, so the same runs
    assert draws() == ours
    seed_everything(2**40 + 7)  # NumPy takes 32-bit seeds only; PPO always took seed mod 2**32
    assert draws() != ours


# ------------------------------------------------------------------------------ models

def test_load_model_with_any_head_and_one_error_wording(tiny_model_dir, tmp_path):
    from hrlaif.core.models import load_model
    lm, tok, ident = load_model(str(tiny_model_dir))
    backbone, _, ident_b = load_model(str(tiny_model_dir), head="backbone")
    assert hasattr(lm, "lm_head") and not hasattr(backbone, "lm_head")
    assert tok.pad_token is not None and not lm.training
    assert ident["weights_sha"] == ident_b["weights_sha"] and ident["n_params"] > ident_b["n_params"] - 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    for head in ("causal_lm", "backbone"):
        with pytest.raises(UserError, match=f"^cannot load model {broken}"):
            load_model(str(broken), head=head)


def test_reward_and_value_models_load_through_the_same_path(tiny_model_dir, tmp_path):
    from hrlaif.trainers.models import RewardModel, ValueModel, load_reward_model
    rm, tok, ident = RewardModel.from_backbone(str(tiny_model_dir), clip=3.0)
    assert ident["weights_sha"]  # the RM's base model is identified like any other load
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rm2, tok2 = load_reward_model(tmp_path / "rm")
    assert rm2.clip == 3.0 and tok2.get_vocab() == tok.get_vocab()
    critic = ValueModel.from_reward_model(rm2)
    assert torch.equal(critic.v_head.weight, rm2.head.weight) and critic.v_head is not rm2.head
    (tmp_path / "rm" / "reward_head.safetensors").write_bytes(b"torn")
    with pytest.raises(UserError, match="^cannot load model"):
        load_reward_model(tmp_path / "rm")


def test_ppo_names_an_unloadable_actor_like_every_other_stage(tiny_rm_dir, tmp_path):
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import PPOTrainer
    broken = tmp_path / "actor"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(UserError, match=f"^cannot load model {broken}"):
        PPOTrainer(PPOConfig(model=str(broken), reward_model=str(tiny_rm_dir), out=str(tmp_path / "o")))


# ---------------------------------------------------------------------- verifiable set

def test_verifiable_categories_have_one_definition():
    import inspect

    from hrlaif.judges.answers import VERIFIABLE, is_verifiable
    from hrlaif.trainers.configs import LabelConfig
    from hrlaif.trainers.feedback.labelling import label_hybrid, label_one
    assert VERIFIABLE == ("math", "multiple_choice")
    for fn in (label_one, label_hybrid):
        assert inspect.signature(fn).parameters["verifiable"].default is VERIFIABLE
    assert list(LabelConfig().verifiable) == list(VERIFIABLE)
    assert is_verifiable("MCQ") and is_verifiable(" Multiple-Choice ") and not is_verifiable("open_qa")


def test_a_remembered_weights_hash_names_the_directory_until_its_files_change(tmp_path, monkeypatch):
    from hrlaif.core.models import dir_weights_hash, remember_weights_hash

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x" * 10)
    from_files = dir_weights_hash(d)
    remember_weights_hash(d, "abc123")
    assert dir_weights_hash(d) == "abc123" != from_files
    (d / "model.safetensors").write_bytes(b"y" * 11)  # rewritten: the recorded hash no longer applies
    assert dir_weights_hash(d) not in ("abc123", from_files)
