"""Device and precision chosen per host: the selection logic, with the host faked."""
from __future__ import annotations

import pytest

from core import hardware
from core.errors import UserError


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
