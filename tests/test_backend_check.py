"""``backend="triton"`` where its kernels cannot run (no CUDA tensors, no TRITON_INTERPRET):
a ValueError in the API and a one-line error of the command (exit 2), before any model call or
load, naming the option and what it needs. Nothing here imports triton."""
import pytest
import torch

from fastremask import generate
from fastremask.models.tiny import tiny_model
from fastremask.sampler import backends
from fastremask.tools import cli
from fastremask.tools import generate as gen_cmd


class NoCalls(torch.nn.Module):
    """The tiny model, failing the test if it is ever called."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_model()
        self.config, self.mask_id = self.inner.config, self.inner.mask_id

    def forward(self, *a, **kw):
        raise AssertionError("the model was called")


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_interpreter_or_cuda_is_enough(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")            # what the tests run the kernels with
    assert backends.triton_unavailable(torch.device("cpu")) is None
    assert backends.triton_unavailable("cuda") is None      # on CUDA tensors the kernels run


def test_api_names_the_option_and_what_it_needs(no_interpreter):
    why = "this machine has no CUDA device" if not torch.cuda.is_available() else "the device is cpu"
    assert backends.triton_unavailable(torch.device("cpu")) == why
    m = NoCalls()
    with pytest.raises(ValueError) as e:
        generate(m, torch.tensor([[1, 2, 3]]), steps=2, gen_length=2, block_length=2, mask_id=m.mask_id,
                 backend="triton")
    assert str(e.value) == ("backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is "
                            f"imported (Triton's CPU interpreter, for small tests); {why}. Use backend='torch' "
                            "(same results)")
    for ok in ("torch", "reference", "auto"):               # auto is torch on the CPU
        assert backends.get_backend(ok, torch.device("cpu")).name == ("torch" if ok == "auto" else ok)


def test_cli_one_line_before_the_model_loads(no_interpreter, monkeypatch, capsys):
    def no_load(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(gen_cmd, "_load_model", no_load)
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)
    why = "this machine has no CUDA device" if not torch.cuda.is_available() else "the device is cpu"
    assert cli.main(["generate", "--no-progress", "--backend", "triton", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        "fastremask: error: --backend triton needs a CUDA device (--device cuda), or TRITON_INTERPRET=1 in the "
        f"environment (Triton's CPU interpreter, for small tests); {why}; use --backend torch (same results)\n")
    assert cli.main(["eval", "--backend", "triton", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastremask: error: --backend triton needs --device cuda") and err.count("\n") == 1
