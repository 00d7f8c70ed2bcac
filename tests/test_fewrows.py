"""The few-rows fp32 decode product (hrlaif/core/fewrows.py): exact where it must be exact, within
fp32's rounding bound of the exact product, and out of the way where it cannot be built."""
import pytest
import torch

U = 2.0 ** -24  # fp32 unit roundoff


def _lib_or_skip():
    from hrlaif.core import fewrows
    if not fewrows.available():
        pytest.skip("no few-rows kernel on this host (not x86 AVX2+FMA, or no C compiler): "
                    "decoding keeps torch's products, which test_fewrows_is_not_offered_* cover")
    return fewrows


@pytest.mark.parametrize("m,n,k", [(1, 8, 64), (7, 13, 5), (8, 192, 576), (9, 1, 1), (16, 40, 33), (3, 49, 300)])
def test_the_product_is_within_fp32_rounding_of_the_exact_one(m, n, k):
    """Each output is one fp32 sum over k of FMA products: within gamma_k * sum|x w| of the exact
    value (Higham's bound for a recursive dot product, gamma_k = k u / (1 - k u)); it holds on every
    host, whatever the order of operations."""
    fewrows = _lib_or_skip()
    g = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    y = fewrows.mm(x, fewrows.pack(w), n)
    exact = x.double() @ w.double().T
    bound = (k * U / (1 - k * U)) * (x.double().abs() @ w.double().abs().T)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert ((y.double() - exact).abs() <= bound).all()


def test_an_output_does_not_depend_on_its_batch_or_its_neighbours():
    """Row i's outputs are the same bits whatever other rows are decoded beside it and however the
    weight's rows are grouped: a sequence's greedy tokens cannot change with the batch it is in."""
    fewrows = _lib_or_skip()
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(11, 96, generator=g), torch.randn(40, 96, generator=g)
    full = fewrows.mm(x, fewrows.pack(w), 40)
    for rows in (slice(0, 1), slice(3, 6), slice(2, 11)):
        assert torch.equal(fewrows.mm(x[rows].contiguous(), fewrows.pack(w), 40), full[rows])
    assert torch.equal(fewrows.mm(x, fewrows.pack(w[16:]), 24), full[:, 16:])
    assert torch.equal(fewrows.mm(x, fewrows.pack(w[:13]), 13), full[:, :13])
    one = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(fewrows.mm(x, fewrows.pack(w), 40), full)
    finally:
        torch.set_num_threads(one)


def test_a_shape_it_was_not_packed_for_is_refused():
    fewrows = _lib_or_skip()
    with pytest.raises(ValueError, match="few-rows product"):
        fewrows.mm(torch.randn(2, 5), fewrows.pack(torch.randn(8, 6)), 8)
    with pytest.raises(ValueError, match="few-rows product"):
        fewrows.mm(torch.randn(2, 6, dtype=torch.float64), fewrows.pack(torch.randn(8, 6)), 8)


def test_linears_decode_on_it_and_the_prompt_pass_keeps_the_plain_product(monkeypatch):
    """Under `decoding_linears` with this product, a decode step's rows go through the kernel (within
    the rounding bound of F.linear's), a pass of more rows than the call decodes is F.linear bit for
    bit, autograd is F.linear, and everything is restored on exit."""
    fewrows = _lib_or_skip()
    from hrlaif.core import decoding
    lin = torch.nn.Linear(24, 10)
    model = torch.nn.Sequential(lin)
    monkeypatch.setattr(decoding, "fp32_product", lambda *_: "fewrows")
    calls = []
    real = fewrows.mm
    monkeypatch.setattr(fewrows, "mm", lambda *a: calls.append(a[0].shape) or real(*a))
    x = torch.randn(4, 1, 24)
    with torch.no_grad(), decoding.decoding_linears(model, 4):
        assert lin.forward.__func__ is decoding.fewrows_linear
        step = lin(x)
        xp = torch.randn(4, 5, 24)
        prompt = lin(xp)
    with decoding.decoding_linears(model, 4):
        xg = torch.randn(4, 1, 24, requires_grad=True)
        lin(xg).sum().backward()
    assert calls == [torch.Size([4, 24])]
    assert torch.equal(prompt, torch.nn.functional.linear(xp, lin.weight, lin.bias))
    xr = xg.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(xr, lin.weight, lin.bias).sum().backward()
    assert torch.equal(xg.grad, xr.grad)
    exact = x.double() @ lin.weight.double().T + lin.bias.double()
    # the bias add is one more rounding: gamma_(K+1) over sum|x w| + |b|
    bound = (25 * U / (1 - 25 * U)) * (x.double().abs() @ lin.weight.double().abs().T + lin.bias.double().abs())
    assert ((step.double() - exact).abs() <= bound).all() and step.shape == (4, 1, 10)
    assert "forward" not in vars(lin) and "_fewrows_weight" not in vars(lin)


def test_fewrows_is_not_offered_where_it_cannot_be_built(tmp_path, monkeypatch):
    """No compiler (CC fails), a cache it cannot write, or a CPU without AVX2/FMA: not a candidate, no
    error, torch's products stay."""
    from hrlaif.core import decoding, fewrows
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(fewrows, "_LIB", {})
    monkeypatch.setenv("CC", "false")
    assert not fewrows.available() and "fewrows" not in decoding.fp32_candidates(8)
    assert not list((tmp_path / "kernels").glob("*"))  # no half-written library left behind
    monkeypatch.setattr(fewrows, "_LIB", {})
    monkeypatch.delenv("CC")
    (tmp_path / "kernels").rmdir()
    (tmp_path / "kernels").write_text("")  # a cache it cannot write into
    assert not fewrows.available()
    monkeypatch.setattr(fewrows, "_LIB", {})
    monkeypatch.setattr(fewrows, "cpu_flags", lambda: frozenset({"sse4_2", "avx"}))
    assert not fewrows.available() and "fewrows" not in decoding.fp32_candidates(8)


def test_the_packed_layout_is_eight_outputs_interleaved():
    fewrows = _lib_or_skip()
    w = torch.arange(13 * 5, dtype=torch.float32).reshape(13, 5)
    p = fewrows.pack(w)
    assert p.shape == (2, 5, 8)
    assert torch.equal(p[0], w[:8].T) and torch.equal(p[1, :, :5], w[8:].T) and not p[1, :, 5:].any()


def _attention_case(B, H, kvh, d, P, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, 1, H, d, generator=g).transpose(1, 2)  # as a Llama attention passes it: strided
    kp, vp = torch.randn(1, kvh, P, d, generator=g), torch.randn(1, kvh, P, d, generator=g)
    # own keys/values as views of a GrowingLayer-style buffer with spare room
    key = torch.randn(B, kvh, S + 5, d, generator=g)[:, :, :S]
    value = torch.randn(B, kvh, S + 5, d, generator=g)[:, :, :S]
    mask = torch.ones(B, 1, 1, P + S, dtype=torch.bool)
    for i in range(B):  # row i: i padding positions right after the prefix
        mask[i, ..., P:P + min(i, S - 1)] = False
    return q, kp, vp, key, value, mask


def _attention_bound(q, k_full, v_full, scale):
    """|fp32 - exact| for softmax(scale q.k + mask) v: the scores' dot products within gamma_d of
    sum|q k| (scaled), exp and the division a few ulp, the two sums over n keys gamma_n; each weight's
    relative error is at most the scores' plus those, so the output's is at most twice that times max|v|."""
    d, n = q.shape[-1], k_full.shape[-2]
    gamma = lambda m: m * U / (1 - m * U)  # noqa: E731
    g = q.shape[1] // k_full.shape[1]
    kk = k_full.repeat_interleave(g, dim=1).double().abs()
    dots = scale * (q.double().abs() @ kk.transpose(-1, -2)).amax(-1, keepdim=True)
    return 2 * v_full.double().abs().amax() * (gamma(d) * dots + gamma(n + 4)) + 4 * U * v_full.abs().amax()


@pytest.mark.parametrize("B,H,kvh,d,P,S", [(8, 9, 3, 64, 748, 40), (3, 6, 2, 8, 11, 7), (1, 4, 1, 16, 3, 5),
                                           (5, 8, 2, 64, 1, 33), (2, 4, 2, 8, 0, 6)])
def test_the_attention_kernel_is_attention_over_the_whole_row(B, H, kvh, d, P, S):
    """The decode step's attention kernel (prefix shared, rows' own keys beside it, GQA, a padding mask
    as bool or additive, or none) against float64 SDPA over each row's full keys: within the fp32
    rounding bound of `_attention_bound` on every host; bool and additive masks give the same bits."""
    fewrows = _lib_or_skip()
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from hrlaif.core.prefix_attention import SharedPrefixLayer, shared_prefix_attention
    q, kp, vp, key, value, mask = _attention_case(B, H, kvh, d, P, S)
    plain = SimpleNamespace(num_key_value_groups=H // kvh, training=False, is_causal=True)
    layer = SharedPrefixLayer(kp, vp)
    module = SimpleNamespace(**vars(plain), _shared_prefix_layer=layer if P else None)
    full_k = torch.cat([kp.expand(B, -1, -1, -1), key], 2)
    full_v = torch.cat([vp.expand(B, -1, -1, -1), value], 2)
    calls = []
    real = fewrows.prefix_attention_step
    fewrows.prefix_attention_step = lambda *a: calls.append(1) or real(*a)
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # a decode step: without a prefix the kernel only takes no-grad calls
    try:
        for m in (mask, None):
            want, _ = sdpa_attention_forward(plain, q.double(), full_k.double(), full_v.double(), m, scaling=0.3,
                                             is_causal=False)
            got, _ = shared_prefix_attention(module, q, key, value, m, scaling=0.3)
            assert got.shape == (B, 1, H, d) and got.dtype == torch.float32
            bound = _attention_bound(q, full_k, full_v, 0.3).transpose(1, 2)
            assert ((got.double() - want).abs() <= bound).all()
        additive = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
        assert torch.equal(shared_prefix_attention(module, q, key, value, additive, scaling=0.3)[0],
                           shared_prefix_attention(module, q, key, value, mask, scaling=0.3)[0])
    finally:
        fewrows.prefix_attention_step = real
        torch.set_grad_enabled(grad)
    assert len(calls) == 4  # every call took the kernel


def test_a_rows_attention_does_not_depend_on_the_other_rows():
    """Each row's output is the same bits alone or in a batch (the prefix's products run 8 query rows
    at a time, each output summed in the same order): a sequence decodes the same in any batch."""
    _lib_or_skip()
    from types import SimpleNamespace

    from hrlaif.core.prefix_attention import SharedPrefixLayer, shared_prefix_attention
    q, kp, vp, key, value, mask = _attention_case(5, 6, 2, 16, 21, 9, seed=3)
    module = SimpleNamespace(num_key_value_groups=3, training=False, is_causal=True,
                             _shared_prefix_layer=SharedPrefixLayer(kp, vp))
    full, _ = shared_prefix_attention(module, q, key, value, mask)
    for rows in (slice(0, 1), slice(1, 4), slice(4, 5)):
        part, _ = shared_prefix_attention(module, q[rows], key[rows], value[rows], mask[rows])
        assert torch.equal(part, full[rows])


def test_ppos_cached_step0_responses_are_keyed_on_the_kernels_too(tmp_path, monkeypatch):
    """Step 0's held-out responses are cached by the decoding code's hash (hrlaif/trainers/drift.py): the
    kernels decode them now, so an edit to the C source must miss that cache."""
    from hrlaif.core import fewrows
    from hrlaif.trainers import drift
    before = drift._code_version()
    edited = tmp_path / "fewrows_kernel.c"
    edited.write_bytes(fewrows.SOURCE.read_bytes() + b"\n/* edited */\n")
    monkeypatch.setattr(fewrows, "SOURCE", edited)
    assert drift._code_version() != before
