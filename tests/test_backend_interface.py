"""One backend interface (issue 18 item 4): each backend exports one `Backend` object with the
same ``sample_rows`` / ``select`` signatures; the public functions share one argument check,
so every bad argument gets the same exception type and message on the reference, the torch
backend and the triton backend (under TRITON_INTERPRET=1 on a CPU); every ``select`` writes
the kept tokens itself, so the loop's step has no branch on the backend."""
import inspect

import pytest
import torch

from fastremask.sampler import backends, fast, loop
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import Backend

CPU = torch.device("cpu")


def _triton():
    pytest.importorskip("triton")
    from fastremask.kernels.numerics import interpreting
    if not interpreting():
        pytest.skip("the triton backend on a CPU needs TRITON_INTERPRET=1")
    import fastremask.kernels as k
    return k


def _objects():
    objs = [ref.BACKEND, fast.BACKEND]
    try:
        objs.append(_triton().BACKEND)
    except pytest.skip.Exception:
        pass
    return objs


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_each_backend_exports_one_object_the_registry_hands_out():
    assert backends.get_backend("reference", CPU) is ref.BACKEND
    assert backends.get_backend("torch", CPU) is fast.BACKEND
    k = _triton()
    assert backends.get_backend("triton", CPU) is k.BACKEND
    assert all(isinstance(b, Backend) for b in (ref.BACKEND, fast.BACKEND, k.BACKEND))
    assert not hasattr(Backend, "fused_write")
    assert [b.capturable for b in (ref.BACKEND, fast.BACKEND, k.BACKEND)] == [False, False, True]


def test_same_signatures():
    want_select = _params(ref.select)
    assert [p[0] for p in want_select] == ["confidence", "candidate", "deferred", "k", "threshold", "rule", "x",
                                           "x0", "start", "out"]
    contract_sample = _params(ref.sample_rows)
    for b in _objects():
        assert _params(b.select) == want_select, b.name
        got = _params(b.sample_rows)
        assert got[:len(contract_sample)] == contract_sample, b.name
        # a backend may take launch-tuning keywords after the contract's, never required ones
        assert all(kind == inspect.Parameter.KEYWORD_ONLY and default is not inspect.Parameter.empty
                   for _, kind, default in got[len(contract_sample):]), b.name
    k = _triton()
    assert _params(k.select) == want_select                      # the public one has rule= too
    assert _params(fast.select) == want_select


def test_the_step_has_no_branch_on_the_backend():
    import re

    src = inspect.getsource(loop.step)
    assert "fused_write" not in src and "if backend" not in src
    assert set(re.findall(r"backend\.(\w+)", src)) == {"sample_rows", "select"}     # nothing else of it


# ----------------------------------------------------------------------------- bad arguments


def _sample_ok(V=7, R=3):
    g = torch.Generator().manual_seed(0)
    lg = torch.randn(4, V, generator=g)
    r = torch.arange(R)
    return dict(logits=lg, rows=r, seeds=r, positions=r, steps=0, temperature=0.0, remasking="low_confidence")


SAMPLE_BAD = {
    "1-D logits": dict(logits=torch.zeros(7)),
    "fp64 logits": dict(logits=torch.zeros(4, 7, dtype=torch.float64)),
    "not a tensor": dict(logits=[[0.0] * 7]),
    "remasking": dict(remasking="top_p"),
    "negative temperature": dict(temperature=-1.0),
    "infinite temperature": dict(temperature=float("inf")),
    "tiny temperature": dict(temperature=1e-45),
    "string temperature": dict(temperature="hot"),
    "negative cfg": dict(cfg_scale=-0.5),
    "int32 rows": dict(rows=torch.arange(3, dtype=torch.int32)),
    "short seeds": dict(seeds=torch.arange(2)),
    "2-D positions": dict(positions=torch.zeros(3, 1, dtype=torch.int64)),
    "rows on meta": dict(rows=torch.arange(3, device="meta")),
    "list seeds": dict(seeds=[0, 1, 2]),
    "step too big": dict(steps=2**32),
    "float steps": dict(steps=torch.zeros(3)),
    "uncond shape": dict(uncond_logits=torch.zeros(2, 7), cfg_scale=1.0),
    "uncond dtype": dict(uncond_logits=torch.zeros(4, 7, dtype=torch.float16), cfg_scale=1.0),
    "active dtype": dict(active=torch.ones(3, dtype=torch.int64)),
    "active shape": dict(active=torch.ones(2, dtype=torch.bool)),
    "suppress outside": dict(suppress_tokens=[7]),
    "suppress negative": dict(suppress_tokens=torch.tensor([-1])),
    "suppress float": dict(suppress_tokens=torch.tensor([1.0])),
}


def _sample_fns():
    k = _triton()
    return {"reference": ref.sample_rows, "torch": fast.sample_rows, "triton": k.sample_rows}


@pytest.mark.parametrize("case", list(SAMPLE_BAD))
def test_sample_rows_bad_argument_same_error_on_every_backend(case):
    errors = {}
    for name, fn in _sample_fns().items():
        kw = {**_sample_ok(), **SAMPLE_BAD[case]}
        with pytest.raises((ValueError, TypeError)) as e:
            fn(kw.pop("logits"), kw.pop("rows"), kw.pop("seeds"), kw.pop("positions"), kw.pop("steps"), **kw)
        errors[name] = (type(e.value), str(e.value))
    assert len(set(errors.values())) == 1, errors


def _select_ok(B=2, C=5):
    g = torch.Generator().manual_seed(1)
    return dict(confidence=torch.rand(B, C, generator=g), candidate=torch.ones(B, C, dtype=torch.bool),
                deferred=torch.zeros(B, C, dtype=torch.bool), k=torch.ones(B, dtype=torch.int64))


SELECT_BAD = {
    "fp64 confidence": dict(confidence=torch.zeros(2, 5, dtype=torch.float64)),
    "1-D confidence": dict(confidence=torch.zeros(5)),
    "candidate shape": dict(candidate=torch.ones(2, 4, dtype=torch.bool)),
    "deferred dtype": dict(deferred=torch.zeros(2, 5, dtype=torch.int64)),
    "no k": dict(k=None),
    "int32 k": dict(k=torch.ones(2, dtype=torch.int32)),
    "unknown rule": dict(threshold=0.5, rule="topk"),
    "eb without threshold": dict(rule="eb"),
    "factor f = 0": dict(threshold=0.0, rule="factor"),
    "eb gamma 32": dict(threshold=32.0, rule="eb"),
    "string threshold": dict(threshold="high"),
    "x without x0": dict(x=torch.zeros(2, 9, dtype=torch.int64)),
    "x0 dtype": dict(x=torch.zeros(2, 9, dtype=torch.int64), x0=torch.zeros(2, 5, dtype=torch.int32)),
    "x rows": dict(x=torch.zeros(3, 9, dtype=torch.int64), x0=torch.zeros(2, 5, dtype=torch.int64)),
    "block outside x": dict(x=torch.zeros(2, 9, dtype=torch.int64), x0=torch.zeros(2, 5, dtype=torch.int64),
                            start=5),
    "x strided": dict(x=torch.zeros(2, 18, dtype=torch.int64)[:, ::2], x0=torch.zeros(2, 5, dtype=torch.int64)),
    "out dtype": dict(out=torch.zeros(2, 5, dtype=torch.int64)),
}


@pytest.mark.parametrize("case", list(SELECT_BAD))
def test_select_bad_argument_same_error_on_every_backend(case):
    k = _triton()
    errors = {}
    for name, fn in {"reference": ref.select, "torch": fast.select, "triton": k.select}.items():
        kw = {**_select_ok(), **SELECT_BAD[case]}
        with pytest.raises((ValueError, TypeError)) as e:
            fn(kw.pop("confidence"), kw.pop("candidate"), kw.pop("deferred"), kw.pop("k"), **kw)
        errors[name] = (type(e.value), str(e.value))
    assert len(set(errors.values())) == 1, errors


# ----------------------------------------------------------------------------- the write


@pytest.mark.parametrize("threshold,rule", [(None, "fixed"), (0.5, "fixed"), (1.0, "factor")])
def test_every_select_writes_the_kept_tokens(threshold, rule):
    """The public ``select`` of each backend with ``x``/``x0``/``start``: the same ``keep`` and
    the same ``x`` (kept ``x0`` written into the block, nothing else touched), bit for bit."""
    k = _triton()
    g = torch.Generator().manual_seed(3)
    B, C, L, start = 3, 6, 11, 4
    conf = torch.rand(B, C, generator=g)
    cand = torch.rand(B, C, generator=g) < 0.7
    dfr = cand & (torch.rand(B, C, generator=g) < 0.2)
    counts = torch.tensor([2, 0, 6])
    x_in = torch.randint(0, 50, (B, L), generator=g)
    x0 = torch.randint(100, 200, (B, C), generator=g)
    results = []
    for fn in (ref.select, fast.select, k.select):
        x = x_in.clone()
        out = torch.ones(B, C, dtype=torch.bool)                       # poisoned
        keep = fn(conf, cand, dfr, counts, threshold, rule=rule, x=x, x0=x0, start=start, out=out)
        assert keep.data_ptr() == out.data_ptr()
        results.append((keep.clone(), x))
    want_keep = ref.select(conf, cand, dfr, counts, threshold, rule=rule)
    want_x = x_in.clone()
    want_x[:, start:start + C] = torch.where(want_keep, x0, x_in[:, start:start + C])
    for keep, x in results:
        assert torch.equal(keep, want_keep) and torch.equal(x, want_x)


@pytest.mark.parametrize("kw", [
    dict(temperature=0.0, remasking="low_confidence"),
    dict(temperature=1.0, remasking="random"),
    dict(temperature=0.7, remasking="margin", cfg_scale=1.0),
    dict(temperature=0.7, remasking="entropy", confidence="dream", top_p=0.5),
    dict(temperature=1.0, remasking="low_confidence", confidence="llada2", top_k=2),
], ids=["T0", "random", "cfg-margin", "dream-entropy-top-p", "llada2-top-k"])
def test_no_rows_gives_the_empty_result_on_every_backend(kw):
    """Zero requested rows (a step where no row has a candidate, e.g. Dream's origin schedule)
    is the reference's empty result on every backend, not an error from deep inside."""
    from fastremask.sampler.contract import check_truncation

    kw = dict(kw)
    trunc = {k: kw.pop(k) for k in ("top_k", "top_p") if k in kw}
    if trunc:
        kw["truncation"] = check_truncation(**trunc)
    lg = torch.randn(3, 7)
    if kw.get("cfg_scale"):
        kw["uncond_logits"] = torch.randn(3, 7)
    e = torch.empty(0, dtype=torch.int64)
    fns = [ref.sample_rows, fast.sample_rows]
    try:
        fns.append(_triton().sample_rows)
    except pytest.skip.Exception:
        pass
    for fn in fns:
        got = fn(lg, e, e, e, e, **kw)
        assert [(t.shape, t.dtype) for t in got] == [((0,), torch.int64), ((0,), torch.float32), ((0,), torch.bool)], fn
