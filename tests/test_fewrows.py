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


def test_linears_decode_on_it_and_the_prompt_pass_keeps_the_plain_product():
    """Under `decoding_linears` with this product, a decode step's rows go through the kernel (within
    the rounding bound of F.linear's), a pass of more rows than the call decodes is F.linear bit for
    bit, autograd is F.linear, and everything is restored on exit."""
    fewrows = _lib_or_skip()
    from hrlaif.core import decoding
    lin = torch.nn.Linear(24, 10)
    model = torch.nn.Sequential(lin)
    saved = decoding.fp32_product
    decoding.fp32_product = lambda *_: "fewrows"
    calls = []
    real = fewrows.mm
    fewrows.mm = lambda *a: calls.append(a[0].shape) or real(*a)
    try:
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
        bound = (25 * U / (1 - 25 * U)) * (x.double().abs() @ lin.weight.double().abs().T + lin.bias.double().abs())
        assert ((step.double() - exact).abs() <= bound).all() and step.shape == (4, 1, 10)
        assert "forward" not in vars(lin) and "_fewrows_weight" not in vars(lin)
    finally:
        decoding.fp32_product, fewrows.mm = saved, real


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
