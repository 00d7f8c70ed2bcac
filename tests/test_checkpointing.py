"""Checkpoint directory housekeeping (no models): what a resume deletes and what pruning keeps."""
from __future__ import annotations

import pytest

from hrlaif.core.errors import UserError
from hrlaif.trainers import checkpointing as ckpt


def _fake(root, *names):
    for n in names:
        (root / n).mkdir(parents=True)
        (root / n / "state.json").write_text("{}")


def test_clean_partial_removes_torn_and_newer_checkpoints(tmp_path):
    # step_6 was renamed into place just before a kill, so `latest` still names step_4
    _fake(tmp_path, "step_2", "step_4", "step_6", ".tmp_step_8")
    (tmp_path / "latest").write_text("step_4\n")
    ckpt.clean_partial(tmp_path, latest_step=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_2", "step_4"]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_4"


def test_prune_never_deletes_the_current_checkpoint(tmp_path):
    # a stale higher-numbered directory must not push the current checkpoint out of the kept set
    _fake(tmp_path, "step_2", "step_4", "step_6", "step_9")
    ckpt._prune(tmp_path, keep=2, current=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4", "step_6", "step_9"]


def test_latest_naming_a_missing_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "latest").write_text("step_4\n")
    with pytest.raises(UserError, match="missing or incomplete"):
        ckpt.latest_checkpoint(tmp_path)


def test_read_log_drops_only_a_torn_last_line(tmp_path):
    from hrlaif.core.store import read_jsonl
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "kl"')
    assert read_jsonl(f, torn_tail_ok=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(UserError, match="metrics.jsonl:3"):  # only a log may have a torn tail
        read_jsonl(f)
    f.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(UserError, match="metrics.jsonl:2"):
        read_jsonl(f, torn_tail_ok=True)
    f.write_text('{"step": 1}\n{"step": 2, "kl"\n')  # a complete (newline-ended) bad line is not torn
    with pytest.raises(UserError, match="metrics.jsonl:2"):
        read_jsonl(f, torn_tail_ok=True)
