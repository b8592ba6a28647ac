"""Model adapters through the `transformers` loading path (the remote-code fallback), with tiny
saved checkpoints.

The checkpoints here are the project's look-alikes (`fastremask.models.testing.save_tiny_*`):
``model_type`` ``llada`` / ``Dream`` with their own modeling file and their own weight names,
plus a `tokenizers`-built tokenizer. Their weights are not in the published layout, so
`models.load` does not run them natively but through ``from_pretrained`` with their remote
code (``trust_remote_code=True``), as any checkpoint that ships its own code. The native path
(checkpoints in the published layout) is tested in tests/test_native_models.py.
"""
import pytest
import torch

from fastremask import generate, models

from fastremask.models import testing
from fastremask.models import DreamAdapter, ModelLoadError
from fastremask.models.tiny import tiny_model
from fastremask.models.tokenizer import CharTokenizer
from fastremask.sampler.contract import assert_bits_equal

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "llada": testing.save_tiny_llada(root / "llada"),
        "llada_cfgmask": testing.save_tiny_llada(root / "llada_cfgmask", mask_in_config=True, seed=1),
        "dream": testing.save_tiny_dream(root / "dream"),
        "mdlm": testing.save_tiny_mdlm(root / "mdlm"),
        "mdlm_local": testing.save_tiny_mdlm(root / "mdlm_local", remote_code=False),
        "nomask": testing.save_tiny_llada(root / "nomask", mask_token=False),
    }


@pytest.fixture(scope="module")
def llada(ckpt):
    return models.load(ckpt["llada"], trust_remote_code=True, device="cpu")


@pytest.fixture(scope="module")
def dream(ckpt):
    return models.load(ckpt["dream"], trust_remote_code=True, device="cpu")


# ----------------------------------------------------------------------------- LLaDA family


def test_llada_loads_through_remote_code(llada):
    assert llada.family == "llada" and type(llada) is models.Adapter
    # the class comes from the checkpoint's own modeling file, as LLaDA's does
    assert type(llada.model).__module__.startswith("transformers_modules")
    assert type(llada.model).__name__ == "TinyLLaDAModelLM"
    assert not llada.model.training
    assert llada.device == torch.device("cpu")


def test_llada_ids_come_from_the_tokenizer(llada):
    vocab = llada.tokenizer.get_vocab()
    assert llada.mask_id == vocab["<|mdm_mask|>"]     # not declared mask_token: found by name
    assert llada.eos_id == vocab["<|endoftext|>"]
    assert llada.eot_id == vocab["<|eot_id|>"]
    assert llada.pad_id == llada.tokenizer.pad_token_id
    assert llada.suppress_eos == [llada.eos_id]
    assert llada.defer_eos_eot == [llada.eos_id, llada.eot_id]


def test_mask_id_from_config_first(ckpt):
    a = models.load(ckpt["llada_cfgmask"], trust_remote_code=True, device="cpu")
    assert a.model.config.mask_token_id == a.mask_id == a.tokenizer.get_vocab()["<|mdm_mask|>"]


def test_llada_logits_as_returned(llada):
    x = torch.tensor([[7, 8, 9, llada.mask_id, llada.mask_id]])
    with torch.no_grad():
        raw = llada.model(x).logits
    out = llada(x)
    assert out.logits.shape == (1, 5, len(llada.tokenizer))
    assert_bits_equal(out.logits, raw)
    m = torch.ones_like(x)
    with torch.no_grad():
        raw_m = llada.model(x, attention_mask=m).logits
    assert_bits_equal(llada(x, attention_mask=m).logits, raw_m)


def test_llada_chat_template(llada):
    ids = llada.tokenize("hi i am a cat", chat=True)
    toks = llada.tokenizer.convert_ids_to_tokens(ids)
    assert toks[:3] == ["<|start_header_id|>", "user", "<|end_header_id|>"]
    assert toks[-3:] == ["<|start_header_id|>", "assistant", "<|end_header_id|>"]
    assert "<|eot_id|>" in toks
    assert llada.tokenize("hi i am a cat") == [llada.tokenizer.get_vocab()[w] for w in "hi i am a cat".split()]


def test_dtype_and_generate_end_to_end(ckpt):
    a = models.load(ckpt["llada"], trust_remote_code=True, device="cpu", dtype="bf16")
    assert a.model.dtype == torch.bfloat16
    ids, mask = a.encode(["hi i am"])
    assert mask is None
    x = generate(a, ids, mask, steps=4, gen_length=4, block_length=4, mask_id=a.mask_id, seed=0)
    assert x.shape == (1, ids.shape[1] + 4)
    assert not (x == a.mask_id).any()


# ----------------------------------------------------------------------------- Dream


def test_dream_loads_with_ids_from_config_and_tokenizer(dream):
    assert isinstance(dream, DreamAdapter) and dream.family == "dream"
    assert dream.mask_id == dream.model.config.mask_token_id == dream.tokenizer.mask_token_id
    vocab = dream.tokenizer.get_vocab()
    assert dream.eos_id == vocab["<|endoftext|>"] and dream.eot_id == vocab["<|im_end|>"]
    ids = dream.tokenize("hi", chat=True)
    assert dream.tokenizer.convert_ids_to_tokens(ids)[-2:] == ["<|im_start|>", "assistant"]


def test_dream_logits_shift_right_by_one(dream):
    x = torch.tensor([[5, 6, 7, dream.mask_id, dream.mask_id, dream.mask_id]])
    with torch.no_grad():
        raw = dream.model(x, "full", None).logits
    got = dream(x).logits
    assert_bits_equal(got[:, 1:], raw[:, :-1])
    assert_bits_equal(got[:, :1], raw[:, :1])
    # an all-ones mask is Dream's "full" attention, as Dream's own generate does it
    assert_bits_equal(dream(x, torch.ones_like(x)).logits, got)


def test_dream_left_padding_gets_dreams_mask_and_positions(dream):
    x = torch.tensor([[0, 0, 5, 6, dream.mask_id], [4, 5, 6, 7, dream.mask_id]])
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    # Dream's generation_utils, written out
    tok_idx = am.long().cumsum(-1) - 1
    tok_idx.masked_fill_(am == 0, 1)
    m4 = torch.logical_and(am.bool().unsqueeze(1).unsqueeze(-2), am.bool().unsqueeze(1).unsqueeze(-1))
    with torch.no_grad():
        raw = dream.model(x, m4, tok_idx).logits
    want = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
    assert_bits_equal(dream(x, am).logits, want)
    # and the padded row's real positions see what the prompt alone sees
    alone = dream(x[:1, 2:]).logits
    torch.testing.assert_close(dream(x, am).logits[:1, 3:], alone[:, 1:], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad inputs


def test_unknown_model_type_needs_family(ckpt):
    with pytest.raises(ModelLoadError, match=r"model_type 'tiny-mdlm'.*family='llada'.*--family"):
        models.load(ckpt["mdlm"], trust_remote_code=True, device="cpu")
    a = models.load(ckpt["mdlm"], trust_remote_code=True, device="cpu", family="llada")
    assert a.family == "llada" and a.mask_id == a.tokenizer.get_vocab()["<|mdm_mask|>"]


def test_registered_model_without_remote_code(ckpt):
    testing.register_tiny_mdlm()
    a = models.load(ckpt["mdlm_local"], device="cpu", family="llada")
    assert type(a.model).__module__ == "fastremask.models.hf_tiny"
    assert a(torch.tensor([[6, 7]])).logits.shape == (1, 2, len(a.tokenizer))


def test_remote_code_must_be_trusted(ckpt):
    # model_type llada, but not the published weight names: the native path says why it cannot
    with pytest.raises(ModelLoadError, match=r"not in the published llada layout.*trust_remote_code=True"):
        models.load(ckpt["llada"], device="cpu")
    with pytest.raises(ModelLoadError, match=r"not in the published dream layout.*trust_remote_code=True"):
        models.load(ckpt["dream"], device="cpu")
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        models.load(ckpt["dream"], device="cpu", native=False)


def test_cache_support_is_the_models(llada, dream):
    from fastremask.models.kv import KVCache

    assert not llada.supports_cache and not dream.supports_cache       # remote code: no cached_logits
    with pytest.raises(ModelLoadError, match="no cached_logits.*cache=None"):
        llada.cached_logits(torch.tensor([[7, 8]]), None, KVCache(), query=(0, 2), out=(0, 2))
    t = models.wrap(tiny_model())
    assert t.supports_cache
    x = torch.tensor([[72, 105, 127, 127]])
    got = t.cached_logits(x, None, KVCache(), query=(0, 4), out=(2, 4))
    assert_bits_equal(got, t.model.cached_logits(x, None, KVCache(), query=(0, 4), out=(2, 4)))
    assert not models.wrap(lambda x, m: x, mask_id=1).supports_cache


def test_missing_mask_token_is_a_clear_error(ckpt):
    with pytest.raises(ModelLoadError, match=r"could not find the mask token.*mask_id="):
        models.load(ckpt["nomask"], trust_remote_code=True, device="cpu")
    a = models.load(ckpt["nomask"], trust_remote_code=True, device="cpu", mask_id=6)
    assert a.mask_id == 6


def test_bad_family_and_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown family"):
        models.load(tmp_path, family="gpt")
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load(tmp_path)
    with pytest.raises(ModelLoadError, match="outside its vocabulary"):
        models.wrap(tiny_model(), mask_id=500)


def test_detect_family():
    assert models.detect_family("llada") == "llada"
    assert models.detect_family("LLaDAMoE") == "llada"
    assert models.detect_family("Dream") == "dream"
    with pytest.raises(ModelLoadError, match="not one fastremask knows"):
        models.detect_family("gpt2")


# ----------------------------------------------------------------------------- tiny and callables


def test_tiny_model_wraps_with_char_tokenizer(tmp_path):
    a = models.wrap(tiny_model())
    assert a.family == "tiny" and isinstance(a.tokenizer, CharTokenizer)
    assert a.mask_id == 127 == a.tokenizer.mask_token_id
    assert a.decode(a.tokenize("Hi, I am")) == "Hi, I am"
    assert a.tokenize("hi", chat=True) == [4, ord("h"), ord("i"), 3, 5]
    # a saved tiny model loads through load() as well
    tiny_model(seed=3).save_pretrained(tmp_path / "t")
    b = models.load(tmp_path / "t", device="cpu")
    assert b.family == "tiny" and b.mask_id == 127
    x = torch.tensor([[72, 105]])
    assert_bits_equal(b(x).logits, tiny_model(seed=3)(x).logits)


def test_task_vocab_model_uses_task_tokenizer(tmp_path):
    from fastremask.evaluation import tasks

    folder = tmp_path / "demo"
    tiny_model(vocab_size=len(tasks.VOCAB)).save_pretrained(folder)
    (folder / "demo.json").write_text('{"task": "add:3"}')
    a = models.load(folder, device="cpu")
    assert a.mask_id == tasks.MASK_ID and a.pad_id == tasks.PAD_ID
    assert a.tokenize("12+34=") == tasks.encode("12+34=")
    with pytest.raises(ModelLoadError, match="no chat template"):
        a.tokenize("1+1=", chat=True)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        a.tokenize("abc")


def test_callable_adapter():
    V = 11

    def f(x, attention_mask):
        return torch.nn.functional.one_hot((x * 3 + 1) % (V - 1), V).float()

    a = models.wrap(f, mask_id=V - 1)
    assert a.family == "callable" and a.tokenizer is None
    x = generate(a, torch.tensor([[1, 2, 3]]), steps=2, gen_length=2, block_length=2, mask_id=V - 1, seed=0)
    assert x.shape == (1, 5)
    assert a.token_str(4) == "4"
    with pytest.raises(ModelLoadError, match="could not find the mask token"):
        models.wrap(f)
