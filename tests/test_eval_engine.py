"""How evaluation runs (hrlaif.evalsets.engine): device, precision, backend and process layout chosen per
host, recorded in results.json and in the cache key. GPUs, vLLM and several processes are not
available here: their selection logic runs with the host faked; the numbers run on the CPU."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from hrlaif.core import hardware
from hrlaif.core.errors import UserError
from hrlaif.evalsets import engine
from hrlaif.evalsets.config import EvalConfig
from hrlaif.evalsets.lazy_model import LazyModel
from hrlaif.evalsets.prefix_lm import PrefixCachingHFLM
from hrlaif.evalsets.runner import evaluate, evaluate_in_process


@pytest.fixture()
def host(monkeypatch):
    """host(cuda=..., n_gpus=..., bf16_cpu=..., vllm=..., rank=..., world=...) fakes this machine."""
    def fake(cuda=False, n_gpus=1, bf16_cpu=False, vllm=False, rank=None, world=None):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: bf16_cpu)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus if cuda else 0)
        monkeypatch.setattr(engine, "vllm_available", lambda: vllm)
        for k, v in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world)):
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, str(v))
    return fake


def test_engine_follows_the_host(host):
    host(bf16_cpu=False)
    e = engine.resolve()
    assert (e.device, e.precision, e.backend, e.main) == ("cpu", "fp32", "hf", True)
    assert engine.weights_layout(e) == "fp32"
    host(bf16_cpu=True)  # AMX / AVX512-BF16: bf16 matmuls over fp32 weights
    e = engine.resolve()
    assert e.precision == "bf16" and engine.load_dtype(e) == "float32"
    assert engine.weights_layout(e) == "fp32, decoder matmul weights bf16"
    host(cuda=True, n_gpus=4)  # a GPU: bf16 weights
    e = engine.resolve()
    assert (e.device, e.precision, engine.load_dtype(e)) == ("cuda", "bf16", "bfloat16")
    assert engine.resolve("cpu", "fp32").cache_fields(True) == {"precision": "fp32", "device": "cpu"}


def test_accelerate_launch_gives_each_process_its_gpu_and_rank_0_writes(host):
    host(cuda=True, n_gpus=4, rank=3, world=4)
    e = engine.resolve("auto")
    assert (e.device, e.rank, e.world_size, e.main) == ("cuda:3", 3, 4, False)
    host(cuda=True, n_gpus=4, rank=0, world=4)
    assert engine.resolve("cuda").main


def test_vllm_backend_selection(host, monkeypatch, tiny_model_dir):
    host(vllm=False)
    with pytest.raises(UserError, match=r"vllm package is not installed \(pip install 'hrlaif-harness\[vllm\]'\)"):
        engine.resolve(backend="vllm")
    host(vllm=True, cuda=True)
    e = engine.resolve(backend="vllm")
    assert e.cache_fields(generates=True)["backend"] == "vllm" and "backend" not in e.cache_fields(False)
    # lm-eval's VLLM class, faked: generation goes to it, log-likelihoods stay on the prefix-cache HF model.
    made = []
    fake = types.ModuleType("lm_eval.models.vllm_causallms")
    fake.VLLM = lambda **kw: made.append(kw) or "vllm-model"
    monkeypatch.setitem(sys.modules, "lm_eval.models.vllm_causallms", fake)
    lm = LazyModel(str(tiny_model_dir))
    lm.engine = engine.Engine("cpu", "bf16", "vllm")  # the HF side on the CPU, so it can really load
    assert lm.lm_eval_model(4, generation=True, seed=7) == "vllm-model"
    assert made == [{"pretrained": str(tiny_model_dir), "dtype": "bfloat16", "batch_size": 4, "seed": 7}]
    assert isinstance(lm.lm_eval_model(4, generation=False), PrefixCachingHFLM)
    # An in-memory model (PPO's drift evaluation) never goes to vLLM.
    model, tok = lm.load()
    mem = LazyModel(model=model, tokenizer=tok, identity={"weights_sha": "x"})
    mem.engine = lm.engine
    assert isinstance(mem.lm_eval_model(4, generation=True), PrefixCachingHFLM)


def test_bad_engine_settings_are_one_line_errors(run_cli, host):
    host(cuda=False)
    for args, needle in ((["--device", "cuda"], "no CUDA device is visible"),
                         (["--device", "gpu"], "must be auto, cpu, cuda or cuda:N"),
                         (["--precision", "fp16"], "--precision: must be one of auto, fp32, bf16"),
                         (["--backend", "vllm"], "vllm package is not installed")):
        code, out, err = run_cli("eval", "--benchmarks", "mmlu", "--limit", "1", *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], (args, err)


def test_non_main_rank_scores_its_share_and_writes_nothing(host, monkeypatch, tiny_model_dir, tmp_path):
    """Under `accelerate launch`, lm-eval returns None on ranks > 0 (rank 0 gathers): those ranks
    judge, classify, execute and write nothing, and never read the cache."""
    host(rank=1, world=2)
    monkeypatch.setattr(engine, "hf_model", lambda *a, **k: "hf-model")  # no process group here
    calls = []
    monkeypatch.setattr("lm_eval.simple_evaluate", lambda **kw: calls.append(kw["model"]))
    monkeypatch.setattr("hrlaif.evalsets.cache.get", lambda k: pytest.fail("a rank > 0 read the cache"))
    monkeypatch.setattr("hrlaif.evalsets.kinds.classify.make_classifier", lambda *a: pytest.fail("classified"))
    monkeypatch.setattr("hrlaif.evalsets.kinds.execute.score_completions", lambda *a: pytest.fail("executed"))
    cfg = EvalConfig(benchmarks=["mmlu", "gsm8k", "humaneval", "toxigen"], limit=2)
    res = evaluate(LazyModel(str(tiny_model_dir)), cfg, tmp_path / "out", progress=False)
    assert calls == ["hf-model"] * 4 and res["benchmarks"] == {}
    assert not (tmp_path / "out").exists()


def test_precision_is_recorded_and_keys_the_cache(tiny_model_dir, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))
    args = ["eval", "--model", tiny_model_dir, "--benchmarks", "mmlu", "--limit", "2", "--device", "cpu"]
    assert run_cli(*args, "--precision", "fp32", "--out", tmp_path / "a")[0] == 0
    code, stdout, err = run_cli(*args, "--precision", "bf16", "--out", tmp_path / "b")
    assert code == 0 and "(cached)" not in stdout, err
    code, stdout, _ = run_cli(*args, "--precision", "bf16", "--out", tmp_path / "c")
    assert code == 0 and "(cached)" in stdout
    for d, precision in (("a", "fp32"), ("b", "bf16")):
        res = json.loads((tmp_path / d / "results.json").read_text())
        assert (res["model"]["precision"], res["model"]["device"]) == (precision, "cpu")
        assert res["config"]["precision"] == precision and "cpu_flags" in res["host"]


def test_drift_evaluation_in_bf16_leaves_the_actor_alone(tiny_model_dir):
    from hrlaif.core.models import load_causal_lm

    model, tok, _ = load_causal_lm(str(tiny_model_dir))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    res = evaluate_in_process(model, tok, ["mmlu"], limit=2, precision="bf16")
    assert res["mmlu"]["n"] == 2 and model.training
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())
    # The optimiser's Parameter objects themselves are back, not copies of them.
    assert all(p is params[k] for k, p in model.named_parameters())


def test_lent_bf16_weights_compute_what_autocast_computes(tiny_model_dir):
    """The drift evaluation lends the actor's decoder bf16 copies of its Linear weights (autocast
    would round them on every call): the logits are the same, bit for bit, and fp32 lends nothing."""
    from hrlaif.core.models import load_causal_lm

    model, _, _ = load_causal_lm(str(tiny_model_dir))
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(input_ids=ids).logits
        with engine.lent_bf16_matmul_weights(model, engine.Engine("cpu", "bf16")):
            lent = model(input_ids=ids).logits
            lent_dtypes = {m.weight.dtype for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)}
    assert lent_dtypes == {torch.bfloat16}
    assert torch.equal(plain, lent)
    with engine.lent_bf16_matmul_weights(model, engine.Engine("cpu", "fp32")):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


# How far bf16 (matmuls under autocast) may move an answer's log-likelihood from fp32: four times the
# largest move seen over 48 MMLU items (0.058 nats, AMX host). The rounding is the same arithmetic on
# every host (bf16 inputs, fp32 accumulation; AVX2 emulates it), only the summation order differs.
BF16_LL_DELTA = 0.25


@pytest.mark.slow
@pytest.mark.host
def test_bf16_and_fp32_pick_the_same_mmlu_letters(shared_data, tmp_path, monkeypatch, host_proof):
    """The embedded SmolLM2-135M on shared MMLU items (5-shot): bf16 moves no option's
    log-likelihood by more than BF16_LL_DELTA, so it can change a letter only where fp32's top two
    options lie within 2 delta; and (48 items, native bf16 only) it picks the fp32 letter on all but
    at most 2. A 135M model is near chance on MMLU, so its letters sit close together: a stricter
    test of bf16 than a larger model. Where bf16 is emulated (AVX2-only hosts: 3x slower than fp32)
    the same invariant is checked on 8 items, one per subject."""
    from hrlaif.core.models import resolve

    native = hardware.cpu_has_native_bf16()
    n = 48 if native else 8
    model = resolve(None).path  # the converted checkpoint in the user's cache, made once
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))  # no outputs left behind
    rows = {}
    for precision in ("fp32", "bf16"):
        cfg = EvalConfig(benchmarks=["mmlu"], data_dir=str(shared_data), limit=n, precision=precision,
                         device="cpu", use_cache=False)
        evaluate(LazyModel(model), cfg, tmp_path / precision, progress=False)
        rows[precision] = {r["doc_id"]: r for r in map(json.loads, (tmp_path / precision / "samples" / "mmlu.jsonl")
                                                       .open())}
    fp32, bf16 = rows["fp32"], rows["bf16"]
    assert len(fp32) == n and fp32.keys() == bf16.keys()
    moved = max(abs(a - b) for d in fp32 for a, b in zip(fp32[d]["loglikelihoods"], bf16[d]["loglikelihoods"]))
    assert moved <= BF16_LL_DELTA
    differ = [d for d in fp32 if fp32[d]["output"] != bf16[d]["output"]]
    for d in differ:  # a letter can only change where fp32's best two options were within 2 delta
        top = sorted(fp32[d]["loglikelihoods"], reverse=True)
        assert top[0] - top[1] <= 2 * BF16_LL_DELTA, d
    if native:
        assert len(differ) <= 2, differ
    host_proof(f"bf16 {'native' if native else 'emulated'}: {n} MMLU items, largest log-likelihood move "
               f"{moved:.3f} nats (bound {BF16_LL_DELTA}), {len(differ)} letters differ from fp32")


def test_a_models_satisfaction_responses_serve_as_a_later_baseline(tiny_model_dir, tmp_path, monkeypatch):
    """The SFT model's responses from its own evaluation are the win ratio's baseline responses in the
    RLAIF and HRLAIF evaluations: generated once, not again per variant."""
    from dataclasses import replace

    from fake_judge import FakeJudge

    from hrlaif.core.models import build_tiny_model
    from hrlaif.evalsets.kinds import judge as judge_kind
    from hrlaif.judges.config import JudgeConfig

    other = build_tiny_model(tmp_path / "other", seed=5)  # before the fresh cache: no second GGUF conversion
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))
    generated = []
    real = judge_kind.generate
    monkeypatch.setattr(judge_kind, "generate", lambda *a, **k: generated.append(a[1].spec) or real(*a, **k))
    cfg = EvalConfig(benchmarks=["satisfaction"], limit=3, max_gen_toks={"satisfaction": 4}, device="cpu")
    with FakeJudge(mode="smart") as fj:
        judge = JudgeConfig(url=fj.url, model="fake", key_env=None, retries=1, cache_dir=str(tmp_path / "jc"))
        evaluate(LazyModel(str(tiny_model_dir)), cfg, tmp_path / "sft", progress=False, judge=judge)
        res = evaluate(LazyModel(str(other)), replace(cfg, baseline_model=str(tiny_model_dir)), tmp_path / "rl",
                       progress=False, judge=judge)
    assert generated == [str(tiny_model_dir), str(other)]  # the baseline was not generated again
    assert res["benchmarks"]["win_ratio"]["n"] == 3
    rows = (tmp_path / "sft" / "samples" / "satisfaction.jsonl").open()
    sft = {json.loads(line)["doc_id"]: json.loads(line)["output"] for line in rows}
    rl = [json.loads(line) for line in (tmp_path / "rl" / "samples" / "satisfaction.jsonl").open()]
    assert all(r["baseline_output"] == sft[r["doc_id"]] for r in rl)
