"""Special token ids of a model: the mask, EOS, EoT and pad ids, resolved once at adaptation.

Order of precedence for each id: what the caller passes (``mask_id=``, ...), the checkpoint's
``config.json`` and tokenizer (by attribute, then by the token's usual spelling), and last the
family's published ids (`fastremask.models.family.Family`), only when they fit the vocabulary.
A mask id that cannot be found, or lies outside the vocabulary, is a `ModelLoadError`.
"""
from __future__ import annotations

import os

from fastremask.models.family import FAMILIES
from fastremask.sampler.protocol import ModelLoadError

__all__ = ["MASK_TOKENS", "EOS_TOKENS", "EOT_TOKENS", "resolve_ids", "first_int"]

MASK_TOKENS = ("<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>")
EOS_TOKENS = ("<|endoftext|>",)
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>")


def _vocab(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    try:
        return tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return {}


def first_int(*values) -> int | None:
    """The first int among ``values`` (a list's first element counts), else None."""
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def config_file(name: str) -> str:
    """``name/config.json`` for a model folder, else "its config" (for messages)."""
    return os.path.join(name, "config.json") if os.path.isdir(name) else "its config"


def resolve_ids(config, tokenizer, family: str, vocab_size: int | None, *, mask_id=None, eos_id=None,
                eot_id=None, pad_id=None, name: str = "the model") -> dict:
    """``{"mask_id", "eos_id", "eot_id", "pad_id"}`` of a model (see the module docstring)."""
    vocab = _vocab(tokenizer)
    cfg_file = config_file(name)
    _check_config_ids(config, vocab_size, cfg_file)
    record = FAMILIES.get(family)
    defaults = record.special_ids() if record is not None else {}

    def by_name(names):
        return next((vocab[t] for t in names if t in vocab), None)

    def fits(i):
        return i if (i is not None and (vocab_size is None or 0 <= i < vocab_size)) else None

    mask = first_int(
        mask_id,
        getattr(config, "mask_token_id", None),
        getattr(tokenizer, "mask_token_id", None),
        by_name(MASK_TOKENS),
        fits(defaults.get("mask")),
    )
    if mask is None:
        tok = ("it has no tokenizer" if tokenizer is None else
               f"its tokenizer declares no mask_token and has none of {', '.join(MASK_TOKENS)}")
        raise ModelLoadError(
            f"could not find the mask token of {name}: {cfg_file} has no field 'mask_token_id' and "
            f"{tok}. Pass mask_id= (CLI: --mask-id)."
        )
    if vocab_size is not None and not 0 <= mask < vocab_size:
        where = (f" ({cfg_file} field 'mask_token_id')" if mask_id is None
                 and first_int(getattr(config, "mask_token_id", None)) == mask else "")
        raise ModelLoadError(f"mask id {mask} of {name}{where} is outside its vocabulary of {vocab_size}")
    eos = first_int(eos_id, by_name(EOS_TOKENS), getattr(tokenizer, "eos_token_id", None),
                    getattr(config, "eos_token_id", None), fits(defaults.get("eos")))
    eot = first_int(eot_id, by_name(EOT_TOKENS), fits(defaults.get("eot")))
    pad = first_int(pad_id, getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None), eos)
    return {"mask_id": mask, "eos_id": eos, "eot_id": eot, "pad_id": pad}


def _check_config_ids(config, vocab_size: int | None, cfg_file: str) -> None:
    """The id fields of a checkpoint's config, where present, must be ints (``eos_token_id``:
    or a list of them) and, but for the mask id (whose range `resolve_ids` reports with the
    id it resolved), inside the vocabulary: a `ModelLoadError` naming the file and the field."""
    if config is None:
        return
    for fname in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        v = getattr(config, fname, None)
        if v is None:
            continue
        values = v if isinstance(v, (list, tuple)) and fname == "eos_token_id" else [v]
        for i in values:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ModelLoadError(f"{cfg_file}: field {fname!r} must be a non-negative integer token id"
                                     f"{' (or a list of them)' if fname == 'eos_token_id' else ''}, got {v!r}")
            if fname != "mask_token_id" and vocab_size is not None and i >= vocab_size:
                raise ModelLoadError(f"{cfg_file}: field {fname!r} is {i}, outside the vocabulary of "
                                     f"{vocab_size} (0..{vocab_size - 1})")
