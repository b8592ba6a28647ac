"""The `triton` backend on a real GPU: LLaDA-sized bit-equality, no host sync, CUDA graphs.

Every test here is marked `gpu` and skipped (with the reason) where there is no CUDA device.
Run on a lent GPU by benchmarks/gpu_check.sh (`pytest -m gpu`).
"""
import pytest
import torch

from fastremask.sampler.contract import REMASKING
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import assert_bits_equal

pytestmark = pytest.mark.gpu

V_LLADA = 126_464


def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")


def _bits_equal(a, b, ctx=""):
    assert torch.equal(a.x0.cpu(), b.x0.cpu()), ctx
    assert_bits_equal(a.confidence, b.confidence, str(ctx))
    assert torch.equal(a.invalid.cpu(), b.invalid.cpu()), ctx


def _ref_rows(lg, rows, seeds, pos, step, per=128, **kw):
    """The reference, a few rows at a time (it materialises int64 [R, V] noise); rows are
    independent, so this is the same function."""
    parts = []
    active = kw.pop("active", None)
    for i in range(0, rows.shape[0], per):
        sl = slice(i, i + per)
        parts.append(ref.sample_rows(lg, rows[sl], seeds[sl], pos[sl], step,
                                     active=None if active is None else active[sl], **kw))
    return ref.RowSample(*(torch.cat([getattr(p, f) for p in parts]) for f in ref.RowSample._fields))


def _llada_case(batch, block, cfg, seed=0, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    n = batch * block
    lg = (torch.randn(n, V_LLADA, generator=g, device="cuda") * 4).to(dtype)
    un = (torch.randn(n, V_LLADA, generator=g, device="cuda") * 4).to(dtype) if cfg else None
    rows = torch.randperm(n, generator=g, device="cuda")
    seeds = torch.randint(0, 2**62, (batch,), generator=g, device="cuda").repeat_interleave(block)
    pos = torch.arange(block, device="cuda").repeat(batch) + 512
    active = torch.rand(n, generator=g, device="cuda") < 0.7
    return lg, un, rows, seeds, pos, active


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("cfg", [False, True])
@pytest.mark.parametrize("block", [32, 256])
@pytest.mark.parametrize("batch", [1, 8])
def test_llada_vocab_bit_equal(batch, block, cfg, temperature):
    _need_cuda()
    from fastremask.kernels import sample_rows
    lg, un, rows, seeds, pos, active = _llada_case(batch, block, cfg, seed=batch * block)
    sup = torch.tensor([126_336], device="cuda")         # LLaDA's mask id
    for i, remasking in enumerate(REMASKING):
        if (i + block + int(cfg)) % 2:                    # two rules per case, all over the grid
            continue
        kw = dict(temperature=temperature, remasking=remasking, cfg_scale=1.5 if cfg else 0.0,
                  uncond_logits=un, suppress_tokens=sup, active=active)
        want = _ref_rows(lg, rows, seeds, pos, 77, **kw)
        got = sample_rows(lg, rows, seeds, pos, 77, **kw)
        _bits_equal(want, got, remasking)


def test_gpu_kernel_equals_cpu_reference():
    """Bits computed on the GPU equal the reference computed on the CPU."""
    _need_cuda()
    from fastremask.kernels import sample_rows
    lg, un, rows, seeds, pos, active = _llada_case(1, 16, True, seed=3)
    for remasking in REMASKING:
        kw = dict(temperature=1.0, remasking=remasking, cfg_scale=0.5)
        got = sample_rows(lg, rows, seeds, pos, 5, uncond_logits=un, active=active, **kw)
        want = ref.sample_rows(lg.cpu(), rows.cpu(), seeds.cpu(), pos.cpu(), 5, uncond_logits=un.cpu(),
                               active=active.cpu(), **kw)
        _bits_equal(want, got, remasking)


def test_splits_identical_on_gpu():
    _need_cuda()
    from fastremask.kernels import sample_rows
    lg, un, rows, seeds, pos, active = _llada_case(1, 32, False, seed=4)
    kw = dict(temperature=1.0, remasking="entropy")
    base = sample_rows(lg, rows, seeds, pos, 1, chunks_per_prog=1, **kw)
    for cpp, warps in ((2, 4), (7, 8), (62, 2), (None, None)):
        _bits_equal(base, sample_rows(lg, rows, seeds, pos, 1, chunks_per_prog=cpp, num_warps=warps, **kw),
                    (cpp, warps))


def _step(lg, un, rows, seeds, pos, active, cand, dfr, k, x, start, B, C):
    from fastremask.kernels import sample_rows, select
    s = sample_rows(lg, rows, seeds, pos, 9, temperature=1.0, remasking="low_confidence",
                    cfg_scale=1.0, uncond_logits=un, active=active)
    keep = select(s.confidence.view(B, C), cand, dfr, k, None, x=x, x0=s.x0.view(B, C), start=start)
    return s, keep


def _step_inputs(B=2, C=32, P=16):
    lg, un, rows, seeds, pos, _ = _llada_case(B, C, True, seed=6)
    rows = torch.arange(B * C, device="cuda")
    cand = torch.rand(B, C, device="cuda") < 0.8
    active = cand.reshape(-1)
    dfr = torch.zeros_like(cand)
    k = torch.tensor([3, 5], device="cuda")
    x = torch.full((B, P + C), 126_336, dtype=torch.int64, device="cuda")
    return lg, un, rows, seeds, pos, active, cand, dfr, k, x, P, B, C


def test_step_has_no_host_sync():
    _need_cuda()
    inputs = _step_inputs()
    _step(*inputs)                                         # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _step(*inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_step_captures_in_a_cuda_graph():
    _need_cuda()
    lg, un, rows, seeds, pos, active, cand, dfr, k, x, P, B, C = _step_inputs()
    x_eager = x.clone()
    s_eager, keep_eager = _step(lg, un, rows, seeds, pos, active, cand, dfr, k, x_eager, P, B, C)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):                        # warm up (compiles) on a side stream
        _step(lg, un, rows, seeds, pos, active, cand, dfr, k, x.clone(), P, B, C)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    x_graph = x.clone()
    with torch.cuda.graph(graph):
        s_graph, keep_graph = _step(lg, un, rows, seeds, pos, active, cand, dfr, k, x_graph, P, B, C)
    x_graph.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    _bits_equal(s_eager, s_graph)
    assert torch.equal(keep_eager, keep_graph)
    assert torch.equal(x_eager, x_graph)
    # new logits in the same buffers: the replay follows them
    lg.copy_(torch.roll(lg, 1, dims=1))
    x_graph.copy_(x)
    graph.replay()
    x_eager2 = x.clone()
    s2, keep2 = _step(lg, un, rows, seeds, pos, active, cand, dfr, k, x_eager2, P, B, C)
    torch.cuda.synchronize()
    _bits_equal(s2, s_graph)
    assert torch.equal(x_eager2, x_graph)


def test_generate_triton_equals_reference_on_gpu():
    _need_cuda()
    from fastremask import generate
    from fastremask.models.tiny import tiny_model
    model = tiny_model(vocab_size=300, d_model=32, n_heads=2, n_layers=2, seed=1).to("cuda")
    prompt = torch.randint(0, model.mask_id, (3, 9), device="cuda")
    for kw in (dict(temperature=0.0, remasking="low_confidence"),
               dict(temperature=1.0, remasking="margin", cfg_scale=1.0),
               dict(temperature=0.7, remasking="entropy", threshold=-2.0),
               dict(temperature=1.0, remasking="random", schedule="pyramid", factor=2)):
        kw = dict(dict(steps=24, gen_length=24, block_length=8, mask_id=model.mask_id, seed=11), **kw)
        want = generate(model, prompt, None, backend="reference", **kw)
        got = generate(model, prompt, None, backend="triton", **kw)
        assert torch.equal(want, got), kw
