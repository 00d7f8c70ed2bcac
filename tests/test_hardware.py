"""Device and precision chosen per host: the selection logic, with the host faked."""
from __future__ import annotations

import pytest

from hrlaif.core import hardware
from hrlaif.core.errors import UserError


@pytest.fixture()
def host(monkeypatch):
    def fake(flags=(), mkldnn_bf16=True, cuda=False, cuda_bf16=True, n_gpus=1):
        import torch
        hardware.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus if cuda else 0)
    yield fake
    hardware.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("flags,cuda,expected", [
    (("avx2",), False, "fp32"),                          # AVX2-only host
    (("avx2", "avx512f", "avx512_bf16"), False, "bf16"),  # AVX512-BF16
    (("avx2", "amx_tile", "amx_bf16"), False, "bf16"),    # AMX Xeon
    (("avx2",), True, "bf16"),                           # a GPU with bf16
])
def test_auto_precision_follows_the_host(host, flags, cuda, expected):
    host(flags=flags, cuda=cuda)
    device = hardware.resolve_device("auto")
    assert device == ("cuda" if cuda else "cpu")
    assert hardware.resolve_precision("auto", device) == expected


def test_explicit_choices_win_and_bad_ones_are_user_errors(host):
    host(flags=("avx2",))
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"  # allowed, with a warning
    assert hardware.resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(UserError, match="precision: must be one of auto, fp32, bf16"):
        hardware.resolve_precision("fp16")
    with pytest.raises(UserError, match="no CUDA device is visible"):
        hardware.resolve_device("cuda")
    with pytest.raises(UserError, match="must be auto, cpu, cuda or cuda:N"):
        hardware.resolve_device("gpu0")
    host(flags=("avx2",), cuda=True, n_gpus=2)
    assert hardware.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match="only 2 CUDA device"):
        hardware.resolve_device("cuda:2")


def test_mkldnn_without_bf16_kernels_means_fp32(host):
    host(flags=("avx512_bf16",), mkldnn_bf16=False)
    assert hardware.resolve_precision("auto", "cpu") == "fp32"


def test_describe_reports_this_hosts_flags():
    d = hardware.describe("cpu", "fp32")
    assert d["device"] == "cpu" and d["precision"] == "fp32" and isinstance(d["cpu_flags"], list)


def test_acting_as_an_avx2_only_host(monkeypatch):
    """HRLAIF_CPU_ISA=avx2 hides every flag above AVX2 from the harness's detection (so auto means fp32
    and the Q8_0 judge), records the real flags beside the override, and names torch's and oneDNN's
    dispatch caps; a value it does not know is a one-line error."""
    real = frozenset({"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16"})
    monkeypatch.setattr(hardware, "_proc_flags", lambda: real)
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(hardware.ISA_ENV, "avx2")
    hardware.cpu_flags.cache_clear()
    hardware.cpu_has_native_bf16.cache_clear()
    try:
        assert hardware.cpu_flags() == {"avx2", "fma", "f16c"}
        assert not hardware.cpu_has_native_bf16() and hardware.resolve_precision("auto", "cpu") == "fp32"
        d = hardware.describe()
        assert d["cpu_isa_override"] == "avx2" and "amx_bf16" in d["real_cpu_flags"]
        assert "amx_bf16" not in d["cpu_flags"]
        assert hardware.hold_back_torch() == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                              "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
        import os
        assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert os.environ["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
        monkeypatch.setenv(hardware.ISA_ENV, "native")
        hardware.cpu_flags.cache_clear()
        assert hardware.cpu_flags() == real and hardware.hold_back_torch() == {}
        monkeypatch.setenv(hardware.ISA_ENV, "avx3")
        with pytest.raises(UserError, match="HRLAIF_CPU_ISA must be one of native, avx2"):
            hardware.host_isa()
    finally:
        hardware.cpu_flags.cache_clear()
        hardware.cpu_has_native_bf16.cache_clear()


def test_the_cli_acts_on_a_bad_isa_override_with_one_line(monkeypatch, run_cli):
    monkeypatch.setenv(hardware.ISA_ENV, "sse9")
    code, _, err = run_cli("eval", "--help")
    assert code == 2 and err.strip().count("\n") == 0 and "HRLAIF_CPU_ISA must be one of" in err
