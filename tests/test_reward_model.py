"""Reward model: O(K) forwards, clipping in forward, K-wise == pairwise loss, padding,
save/load, learning a synthetic preference through DeepSpeed, and bad-input errors."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from hrlaif.core.errors import UserError
from hrlaif.trainers.configs import RMConfig
from hrlaif.trainers.loss import kwise_group_loss, pairwise_group_loss
from hrlaif.trainers.models import RewardModel, load_reward_model
from hrlaif.trainers.reward_model import encode_group, load_labels, score_texts, train_reward_model

RESPONSES = ["Four.", "It is 4 because 2 + 2 = 4.", "I think the answer is five", "22"]


@pytest.fixture()
def rm_tok(tiny_model_dir):
    torch.manual_seed(0)
    rm, tok, _ = RewardModel.from_backbone(str(tiny_model_dir), clip=10.0)
    rm.eval()
    return rm, tok


def _full_order(k):
    return torch.tensor(list(itertools.combinations(range(k), 2)))  # i < j: i preferred


def test_kwise_forwards_each_response_exactly_once(rm_tok):
    rm, tok = rm_tok
    rows = []  # an independent counter: a hook on the backbone records the batch size of every call
    rm.backbone.register_forward_hook(lambda mod, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    for k in (2, 3, 4):
        ids, mask, _ = encode_group(tok, "What is 2 + 2?", RESPONSES[:k], 256)
        rows.clear()
        kwise_group_loss(rm, ids, mask, _full_order(k))
        assert rows == [k]  # one call, K sequences
        rows.clear()
        pairwise_group_loss(rm, ids, mask, _full_order(k))
        assert rows == [2] * (k * (k - 1) // 2) and sum(rows) == k * (k - 1)


def test_kwise_loss_equals_naive_pairwise_loss(rm_tok):
    rm, tok = rm_tok
    ids, mask, _ = encode_group(tok, "What is 2 + 2?", RESPONSES, 256)
    for pairs in (_full_order(4), torch.tensor([[1, 0], [1, 2], [3, 2]])):  # full and partial orders
        with torch.no_grad():
            k, _ = kwise_group_loss(rm, ids, mask, pairs)
            n = pairwise_group_loss(rm, ids, mask, pairs)
        assert k.item() == pytest.approx(n.item(), abs=1e-5)
        assert k.item() > 0
    # Gradients agree as well (same objective, not just the same value).
    rm.zero_grad()
    kwise_group_loss(rm, ids, mask, _full_order(4))[0].backward()
    gk = rm.head.weight.grad.clone()
    rm.zero_grad()
    pairwise_group_loss(rm, ids, mask, _full_order(4)).backward()
    assert torch.allclose(gk, rm.head.weight.grad, atol=1e-5)


def test_reward_is_clipped_inside_forward(rm_tok):
    rm, tok = rm_tok
    ids, mask, _ = encode_group(tok, "Q", RESPONSES, 256)
    with torch.no_grad():
        rm.head.weight.mul_(1e6)
        rm.head.bias.fill_(1e6)
    reward, raw = rm(ids, mask, return_raw=True)
    assert raw.abs().min() > 10 and reward.abs().max() <= 10.0
    assert torch.equal(reward, raw.clamp(-10, 10))
    # clamp is in the graph: a reward beyond the clip passes no gradient back.
    rm.zero_grad()
    rm(ids, mask).sum().backward()
    assert rm.head.weight.grad.abs().max() == 0 and rm.head.bias.grad.abs().max() == 0


def test_score_read_at_last_token_for_left_and_right_padding(rm_tok):
    rm, tok = rm_tok
    ids, mask, _ = encode_group(tok, "What is 2 + 2?", RESPONSES, 256)  # right padded
    with torch.no_grad():
        batched = rm(ids, mask)
        alone = torch.stack([rm(ids[i:i + 1, :int(mask[i].sum())], mask[i:i + 1, :int(mask[i].sum())])[0]
                             for i in range(len(RESPONSES))])
        # Re-pad on the left: same scores.
        left_ids, left_mask = torch.full_like(ids, tok.pad_token_id), torch.zeros_like(mask)
        for i in range(len(RESPONSES)):
            n = int(mask[i].sum())
            left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
        left = rm(left_ids, left_mask)
    assert torch.allclose(batched, alone, atol=1e-5) and torch.allclose(left, alone, atol=1e-5)
    assert len(set(alone.tolist())) == len(RESPONSES)  # the score depends on the response


def test_save_load_roundtrip_identical_rewards(rm_tok, tmp_path):
    rm, tok = rm_tok
    prompts = ["What is 2 + 2?"] * 4
    before = score_texts(rm, tok, prompts, RESPONSES)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rm2, tok2 = load_reward_model(tmp_path / "rm")
    assert rm2.clip == 10.0
    assert score_texts(rm2, tok2, prompts, RESPONSES) == before
    with pytest.raises(UserError, match="not a reward-model directory"):
        RewardModel.from_pretrained(tmp_path)


# ------------------------------------------------------------------ training

GOOD = [" excellent", " great", " superb"]
BAD = [" terrible", " awful", " poor"]


def _synthetic_labels(path, n_prompts=30, k=3):
    """Preferred responses end with a positive word, the others with a negative one.

    Several words on each side make the random-init ranking a coin flip per pair, so
    the held-out accuracy has room to improve."""
    rows = []
    topics = ["cats", "rivers", "prime numbers", "bread", "chess", "rain", "trains", "music", "glass", "moss"]
    for n in range(n_prompts):
        good = [i for i in range(k) if (i + n) % k == 0]  # the good one moves around
        responses = [f"Something about {topics[(n + i) % 10]} {i}"
                     + (GOOD[(n + i) % 3] if i in good else BAD[(n * 2 + i) % 3]) for i in range(k)]
        pairs = [[g, b] for g in good for b in range(k) if b not in good]
        rows.append({"id": f"q{n}", "prompt": f"Tell me about {topics[n % 10]} ({n})",
                     "category": ["math", "open_qa"][n % 2], "responses": responses, "pairs": pairs,
                     "mode": "basic"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_train_rm_learns_a_trivial_preference(tiny_model_dir, tmp_path):
    labels = tmp_path / "labels.jsonl"
    _synthetic_labels(labels)
    out = train_reward_model(RMConfig(model=str(tiny_model_dir), labels=str(labels), out=str(tmp_path / "rm"),
                                      epochs=2, lr=1e-2, groups_per_step=2, heldout_frac=0.2, seed=3,
                                      zero_stage=2, max_len=64, precision="fp32"))
    m = json.loads((out / "rm_metrics.json").read_text())
    # FORMATS.md contract
    assert set(m) >= {"heldout_acc", "per_category", "clipped_share", "clip"}
    acc = m["heldout_acc"]
    assert acc["n"] == 6 * 2  # 6 held-out prompts x 2 pairs
    assert acc["score"] >= 0.9 and acc["score"] > m["heldout_acc_init"]["score"]
    assert acc["ci95"][0] <= acc["score"] <= acc["ci95"][1]
    assert set(m["per_category"]) <= {"math", "open_qa"}
    assert sum(c["n"] for c in m["per_category"].values()) == acc["n"]
    assert m["clip"] == 10.0 and 0.0 <= m["clipped_share"] <= 1.0
    # O(K): every training group was forwarded once, K = 3 sequences.
    tf = m["train_forward"]
    assert tf["groups"] == (2 * 24 // 2) * 2 and tf["backbone_calls"] == tf["groups"]
    assert tf["sequences"] == 3 * tf["groups"] and tf["sequences_per_group"] == 3
    assert m["split"]["heldout_ids"] == 6 and m["split"]["train_ids"] == 24
    # The saved model reproduces the ranking.
    rm, tok = load_reward_model(out)
    s = score_texts(rm, tok, ["Tell me about cats (0)"] * 2, ["Something about cats 0 superb",
                                                              "Something about cats 0 awful"])
    assert s[0] > s[1]
    steps = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == m["steps"] == 2 * 24 // 2


def test_heldout_split_is_by_prompt_id_and_seeded(tmp_path):
    from hrlaif.trainers.reward_model import split_heldout

    labels = tmp_path / "labels.jsonl"
    _synthetic_labels(labels, n_prompts=20)
    groups = load_labels(labels)
    groups += [dict(g) for g in groups[:5]]  # the same id twice (e.g. basic + hybrid rows)
    tr, he = split_heldout(groups, 0.25, seed=1)
    assert not {g["id"] for g in tr} & {g["id"] for g in he}
    assert len({g["id"] for g in he}) == 5
    assert [g["id"] for g in split_heldout(groups, 0.25, seed=1)[1]] == [g["id"] for g in he]
    assert [g["id"] for g in split_heldout(groups, 0.25, seed=2)[1]] != [g["id"] for g in he]


# ------------------------------------------------------------------ bad input

def _label_row(**kw):
    row = {"id": "a", "prompt": "P", "category": "math", "responses": ["x", "y", "z"], "pairs": [[0, 1]]}
    row.update(kw)
    return row


@pytest.mark.parametrize("row,msg", [
    (_label_row(pairs=[[0, 3]]), "out of range"),
    (_label_row(pairs=[[-1, 0]]), "out of range"),
    (_label_row(pairs=[[1, 1]]), "with itself"),
    (_label_row(pairs=[[0, 1], [1, 2], [2, 0]]), "cycle"),
    (_label_row(pairs=[[0, "1"]]), "integer indices"),
    (_label_row(responses=["only one"]), ">= 2 strings"),
    ({"id": "a", "prompt": "P", "responses": ["x", "y"]}, "no `pairs` field"),
])
def test_bad_labels(tmp_path, row, msg):
    p = tmp_path / "labels.jsonl"
    p.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=msg):
        load_labels(p)


def test_empty_and_broken_label_files(tmp_path):
    p = tmp_path / "labels.jsonl"
    p.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="no labelled groups"):
        load_labels(p)
    p.write_text('{"id": "a", "prompt"\n', encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_labels(p)
    with pytest.raises(UserError, match="not found"):
        load_labels(tmp_path / "missing.jsonl")


def test_labels_cross_checked_against_samples(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"id": "a", "prompt": "P", "responses": ["x", "y"], "finished": [True, True]}) + "\n",
                       encoding="utf-8")
    labels = tmp_path / "labels.jsonl"
    # A red-team rewrite appended to the policy responses still matches.
    labels.write_text(json.dumps(_label_row(responses=["x", "y", "x (rewritten)"], pairs=[[2, 0]],
                                            sources=["policy", "policy", "rewrite"])) + "\n", encoding="utf-8")
    assert load_labels(labels, samples)[0]["pairs"] == [(2, 0)]
    labels.write_text(json.dumps(_label_row(responses=["x", "DIFFERENT"])) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="does not match the samples"):
        load_labels(labels, samples)
    labels.write_text(json.dumps(_label_row(id="zzz", responses=["x", "y"])) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="not in the samples file"):
        load_labels(labels, samples)


def test_cli_train_rm_errors(tiny_model_dir, tmp_path, run_cli):
    p = tmp_path / "labels.jsonl"
    p.write_text(json.dumps(_label_row(pairs=[[0, 9]])) + "\n", encoding="utf-8")
    code, _, err = run_cli("train-rm", "--model", tiny_model_dir, "--labels", p, "--out", tmp_path / "rm")
    assert code == 2 and "out of range" in err and "Traceback" not in err
    # every pair-less training group -> nothing to learn
    p.write_text("".join(json.dumps(_label_row(id=f"i{n}", pairs=[])) + "\n" for n in range(4)), encoding="utf-8")
    code, _, err = run_cli("train-rm", "--model", tiny_model_dir, "--labels", p, "--out", tmp_path / "rm")
    assert code == 2 and "no training group has a preference pair" in err


# ------------------------------------------------------------------ issue 12: clipping, clustered CI, shared pairs

def test_training_loss_reads_the_raw_score_so_an_outlier_keeps_its_gradient(rm_tok):
    """Clipping is for scoring: a pair whose scores both lie beyond the clip still teaches the model."""
    rm, tok = rm_tok
    ids, mask, _ = encode_group(tok, "Q", RESPONSES[:2], 256)
    with torch.no_grad():
        rm.head.bias.fill_(50.0)  # every raw score far above clip = 10
    reward, raw = rm(ids, mask, return_raw=True)
    assert (raw > 10).all() and (reward == 10).all()
    rm.zero_grad()
    loss, scores = kwise_group_loss(rm, ids, mask, torch.tensor([[0, 1]]))
    loss.backward()
    assert torch.equal(scores, raw)  # the loss saw the raw scores
    assert rm.head.weight.grad.abs().max() > 0
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(raw[0] - raw[1]).item(), rel=1e-5)


def test_heldout_accuracy_ci_resamples_prompts(tiny_model_dir, tmp_path):
    """Pairs of one prompt share its responses: the CI is a bootstrap over prompt ids."""
    from hrlaif.core.stats import cluster_bootstrap_mean
    from hrlaif.trainers.reward_model import evaluate
    labels = tmp_path / "labels.jsonl"
    _synthetic_labels(labels, n_prompts=6, k=4)
    groups = load_labels(labels)
    torch.manual_seed(0)
    rm, tok, _ = RewardModel.from_backbone(str(tiny_model_dir), clip=10.0)
    res = evaluate(rm.eval(), tok, groups, 64, 10.0)
    acc = res["acc"]
    outcomes, ids = [], []
    with torch.no_grad():
        for g in groups:
            ids_, mask, _ = encode_group(tok, g["prompt"], g["responses"], 64)
            r = rm(ids_, mask)
            outcomes += [float(r[i] > r[j]) for i, j in g["pairs"]]
            ids += [g["id"]] * len(g["pairs"])
    assert acc["n"] == len(outcomes) == 6 * 3 and acc["n_clusters"] == 6
    assert acc == cluster_bootstrap_mean(outcomes, ids)


def test_variants_hold_out_the_same_prompts_and_score_a_shared_pair_set(tiny_model_dir, tmp_path):
    """Two label sets of one sample file (ids missing from one of them) get the same held-out ids;
    the shared pair file is scored for both and never trained on."""
    from hrlaif.core.store import read_jsonl
    labels = tmp_path / "labels.jsonl"
    rows = _synthetic_labels(labels, n_prompts=20)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "responses": r["responses"]}) + "\n"
                               for r in rows))
    other = tmp_path / "other_labels.jsonl"  # another variant: the same samples, some prompts unlabelled
    other.write_text("".join(json.dumps(r) + "\n" for r in rows if int(r["id"][1:]) % 3))
    shared = tmp_path / "shared.jsonl"
    shared.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    held = {}
    for name, lab in (("a", labels), ("b", other)):
        out = train_reward_model(RMConfig(model=str(tiny_model_dir), labels=str(lab), samples=str(samples),
                                          out=str(tmp_path / name), max_steps=1, heldout_frac=0.25, seed=5,
                                          max_len=64, heldout_pairs=str(shared), precision="fp32"))
        m = json.loads((out / "rm_metrics.json").read_text())
        held[name] = {json.loads(x)["id"] for x in (out / "heldout_pairs.jsonl").read_text().splitlines()}
        assert m["split"]["heldout_ids_from"] == "samples" and m["placement"]["precision"] == "fp32"
        s = m["shared_heldout_acc"]
        assert s["n"] == 6 and s["n_clusters"] == 3 and s["file"] == str(shared)
        labelled = {r["id"] for r in read_jsonl(lab)}
        assert {"q0", "q1", "q2"} & labelled <= held[name]  # the shared prompts are never trained on
    # the random part of the split is the same draw for both (b lacks the labels of some of its ids)
    assert held["b"] <= held["a"] and held["a"] - held["b"] == {i for i in held["a"] if int(i[1:]) % 3 == 0}
