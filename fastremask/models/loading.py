"""`load`: a checkpoint (local folder or hub id) and its tokenizer, adapted for `generate`.

`load` is a dispatcher over three paths, chosen by the checkpoint's family record
(`fastremask.models.family`, found by ``config.json``'s ``model_type``):

* `_load_own`: a family with its own folder loader (the tiny model, ``model_type
  "fastremask-tiny"``, with its character tokenizer or the demo's vocabulary);
* `_load_native`: a family with a native forward (`fastremask.models.native`: LLaDA, Dream) in
  the published weight layout: no remote code, any `transformers` version;
* `_load_transformers`: everything else (LLaDA-MoE, unknown types with ``family=``,
  ``native=False``), with the checkpoint's remote code when it ships some
  (``trust_remote_code=True``; the published LLaDA/Dream/LLaDA-MoE code needs `transformers`
  `REMOTE_CODE_TRANSFORMERS`).

The special ids come from the checkpoint where it names them (`fastremask.models.ids`).
"""
from __future__ import annotations

import json
import os

import torch

from fastremask.models.adapters import Adapter, detect_family, wrap
from fastremask.models.checks import read_json_object
from fastremask.models.dtypes import DTYPES, unknown_dtype
from fastremask.models.family import FAMILIES, Family, family_for
from fastremask.sampler.protocol import ModelLoadError

__all__ = ["load", "max_positions", "REMOTE_CODE_TRANSFORMERS"]

# The transformers versions the published LLaDA / Dream / LLaDA-MoE modeling files (remote code)
# run with: 4.46 - 4.57 (5.x fails in them: LLaDA's 'all_tied_weights_keys', Dream's rope
# 'default'). Declared as the extra fastremask[remote-code] in pyproject.toml. The native models
# and the project's own look-alike remote code (fastremask/models/hf_tiny.py) need no such pin.
REMOTE_CODE_TRANSFORMERS = ">=4.46,<4.58"


def max_positions(config) -> tuple[str, int] | None:
    """``(field, positions)`` a model's config allows (the tiny model's ``max_len``, LLaDA's
    ``max_sequence_length``, Dream's ``max_position_embeddings``), or None."""
    for name in ("max_len", "max_sequence_length", "max_position_embeddings"):
        v = getattr(config, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return name, v
    return None


def _dtype_kwarg(dtype) -> dict:
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    # transformers 4.56 renamed torch_dtype= to dtype=
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _parse_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return "auto" if dtype is None else dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ModelLoadError(unknown_dtype(dtype))
    return DTYPES[dtype]


def _local_config(path) -> dict | None:
    """``path/config.json`` as a dict (None when there is none); a `ModelLoadError` naming the
    file when it is not a JSON object."""
    cfg = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(cfg):
        return None
    return read_json_object(cfg, " (the model's config)")


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): starts with ``.``, ``/`` or ``~``, has a
    backslash, or more than one ``/``."""
    return (name.startswith((".", "/", "~")) or os.path.isabs(name) or "\\" in name
            or name.count("/") > 1 or name.endswith("/"))


def _weights_files(folder: str) -> str:
    """The weight files of ``folder``, for messages (``model.safetensors``, shards, ``*.bin``)."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith((".safetensors", ".bin", ".pt", ".pth")))
    except OSError:
        names = []
    if not names:
        return f"{folder} (no *.safetensors or *.bin weights in it)"
    shown = ", ".join(os.path.join(folder, n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _check_family(family: str | None, raw: dict | None, name: str) -> None:
    """A ``family`` given for a ``model_type`` fastremask knows must be that type's family:
    the adapters call the model differently (Dream: shifted logits, positional mask and
    position ids), so the wrong one fails in the model or gives wrong logits."""
    if family is None or raw is None:
        return
    record = family_for(raw.get("model_type"))
    if record is not None and record.name != family:
        raise ModelLoadError(
            f"family={family!r} (CLI: --family {family}) contradicts {os.path.join(name, 'config.json')}: "
            f"its model_type {raw.get('model_type')!r} is a {record.name} model; drop the family (it is for "
            "model types fastremask does not know)")


def _auto_class(config):
    """The `transformers` auto class that builds the model *with* its output head."""
    import transformers

    auto_map = getattr(config, "auto_map", None) or {}
    for key in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM"):
        if key in auto_map:  # remote code: LLaDA and Dream register their LM under AutoModel
            return getattr(transformers, key)
    for cls in (transformers.AutoModelForMaskedLM, transformers.AutoModelForCausalLM):
        if type(config) in cls._model_mapping:
            return cls
    return transformers.AutoModel


def _remote_code_hint(raw: dict | None) -> str:
    """A sentence on the transformers versions the published remote code runs with, when the
    installed one is outside them and the checkpoint ships code; else ""."""
    import transformers

    if not (raw and raw.get("auto_map")):
        return ""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    if (4, 46) <= (major, minor) < (4, 58):
        return ""
    native = " (or drop native=False: fastremask runs this model natively)" if _native_record(raw) else ""
    return (f"; the published LLaDA / Dream / LLaDA-MoE modeling code runs with transformers "
            f"{REMOTE_CODE_TRANSFORMERS} (installed: {transformers.__version__}): pip install "
            f"'transformers{REMOTE_CODE_TRANSFORMERS}' (the extra fastremask[remote-code]){native}")


def _native_record(raw: dict | None) -> Family | None:
    """The family record whose native forward reads ``raw``'s ``model_type``, or None."""
    from fastremask.models import native

    return native.native_record(raw.get("model_type")) if raw else None


def _check_remote_files(raw: dict, folder: str, native_hint: bool) -> None:
    """The modules ``auto_map`` names must be in a local folder (else transformers' message
    is about the hub)."""
    auto_map = raw.get("auto_map")
    if not isinstance(auto_map, dict):
        return
    for key, ref in auto_map.items():
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        for r in refs:
            if not isinstance(r, str) or "--" in r or "." not in r:
                continue                        # None entries, references to other hub repos
            module = r.rsplit(".", 1)[0]
            path = os.path.join(folder, module.replace(".", os.sep) + ".py")
            if not os.path.isfile(path):
                hint = ("; it is in the published layout, so drop native=False to run fastremask's "
                        "native forward" if native_hint else "")
                raise ModelLoadError(
                    f"{os.path.join(folder, 'config.json')}: field 'auto_map' ({key}) names {module}.py, "
                    f"which is not in {folder}: the checkpoint's own modeling code is missing{hint}")


def _hub_folder(name: str, revision: str | None, trust_remote_code: bool) -> str | None:
    """A local snapshot of hub model ``name`` with what the native path reads (config,
    safetensors, tokenizer files), or None when its config cannot be fetched or its
    model_type has no native forward (the transformers path then reports)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        cfg = hf_hub_download(name, "config.json", revision=revision)
        with open(cfg, encoding="utf-8") as f:
            raw = json.load(f)
    except Exception:  # noqa: BLE001 - offline, no such repo, not JSON: the transformers path says so
        return None
    if not isinstance(raw, dict) or _native_record(raw) is None:
        return None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
    try:
        return snapshot_download(name, revision=revision,
                                 allow_patterns=patterns + (["*.py"] if trust_remote_code else []))
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"could not download {name} from the hub: {_first_line(e)}") from e


def _tokenizer_files(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in
               ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))


def _native_tokenizer(folder: str, name: str, trust_remote_code: bool):
    """The folder's tokenizer through `transformers` (None when the folder has no tokenizer
    files: token ids only). Without ``trust_remote_code`` a tokenizer that names its own code
    is read from its ``tokenizer.json`` as a `PreTrainedTokenizerFast`."""
    import transformers

    if not _tokenizer_files(folder):
        return None
    try:
        # a bare config: the tokenizer's own files decide its class (transformers would otherwise
        # read config.json as a model config it does not know, and warn)
        return transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                          config=transformers.PretrainedConfig())
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            try:
                return transformers.PreTrainedTokenizerFast.from_pretrained(folder)
            except Exception:  # noqa: BLE001
                pass
        code = "" if trust_remote_code else " (if it ships its own tokenizer code, pass trust_remote_code=True)"
        raise ModelLoadError(f"could not load the tokenizer of {name}: {_first_line(e)}{code}") from e


def load(model_id_or_path, *, family: str | None = None, dtype="auto", device=None,
         trust_remote_code: bool = False, native: bool | None = None, mask_id: int | None = None,
         eos_id: int | None = None, eot_id: int | None = None, pad_id: int | None = None,
         revision: str | None = None) -> Adapter:
    """Load a checkpoint (local folder or hub id) and its tokenizer, and adapt it.

    Parameters
    ----------
    model_id_or_path : a folder with ``config.json`` or a hub id (hubs need network access).
    family : a name in `fastremask.models.family.FAMILIES` (``"llada"``, ``"dream"``, ...) or
        None (from ``config.json``'s ``model_type``); needed only for model types fastremask
        does not know, and refused when it contradicts one it knows.
    dtype : ``"auto"`` (the checkpoint's), a `torch.dtype` or a name of
        `fastremask.models.dtypes.DTYPES` (``"bf16"``, ``"fp16"``, ``"fp32"``, ...).
    device : where to put the model; None: ``cuda`` if available, else ``cpu``.
    trust_remote_code : run the code shipped with the checkpoint (the transformers path; for a
        native model only its tokenizer's code, if it has any).
    native : None (default): a model type with a native forward (the family record's
        ``native_types``: ``llada``, ``Dream``) in the published layout runs natively
        (`fastremask.models.native`, `NativeAdapter`: no remote code, any transformers
        version), everything else through transformers; a ``llada``/``Dream`` folder whose
        weights do not carry the published names goes to transformers too (it needs its own
        code). True: native or a clear error. False: always transformers (the published LLaDA
        and Dream code needs transformers `REMOTE_CODE_TRANSFORMERS`).
    mask_id, eos_id, eot_id, pad_id : override what the config and tokenizer say.

    A folder written by `TinyMaskedLM.save_pretrained` (``model_type "fastremask-tiny"``)
    loads as the built-in tiny model with the `CharTokenizer` (or its ``demo.json`` vocabulary).
    """
    name = os.fspath(model_id_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if family is not None and family not in FAMILIES:
        raise ModelLoadError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if native not in (None, True, False):
        raise ModelLoadError(f"native must be None, True or False, got {native!r}")
    if not os.path.exists(name) and _looks_local(name):
        raise ModelLoadError(f"the model folder {name} does not exist")
    if os.path.isfile(name):
        raise ModelLoadError(f"{name} is a file; expected a model folder (with config.json) or a hub id")
    ids = dict(mask_id=mask_id, eos_id=eos_id, eot_id=eot_id, pad_id=pad_id)
    raw = _local_config(name)
    _check_family(family, raw, name)
    record = family_for(raw.get("model_type")) if raw is not None else None
    if record is not None and record.loader is not None:
        return _load_own(record, name, dtype=dtype, device=device, family=family, ids=ids)
    if raw is None and os.path.exists(name):
        raise ModelLoadError(f"{name} has no config.json; is it a model folder?")
    folder = name if raw is not None else None
    if raw is None and native is not False:          # a hub id: fetch what the native path reads
        folder = _hub_folder(name, revision, trust_remote_code)
        raw = _local_config(folder) if folder else None
        _check_family(family, raw, name)
    nat = _native_record(raw)
    if native is True and nat is None:
        where = os.path.join(folder, "config.json") if folder else name
        raise ModelLoadError(f"native=True, but {where} has model_type {(raw or {}).get('model_type')!r}; "
                             f"fastremask has native forward passes for {_native_names()} only")
    if nat is not None and native is not False:
        if _published_layout(folder, raw, nat, name, native=native, trust_remote_code=trust_remote_code):
            return _load_native(folder, name, raw, dtype=dtype, device=device,
                                trust_remote_code=trust_remote_code, ids=ids)
        # a checkpoint with its own code and its own weight names: the transformers path
    return _load_transformers(name, folder, raw, family=family, native_hint=nat is not None and native is False,
                              dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                              revision=revision, ids=ids)


def _native_names() -> str:
    """The model types with a native forward, for messages (``'llada' and 'dream'``)."""
    names = [repr(t) for f in FAMILIES.values() for t in f.native_types]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def _load_own(record: Family, folder: str, *, dtype, device, family, ids: dict) -> Adapter:
    """A family with its own folder loader (``record.loader``: the tiny model)."""
    tdtype = _parse_dtype(dtype)
    try:
        model, tokenizer = record.loader_function()(folder, dtype=None if tdtype == "auto" else tdtype,
                                                    device=device)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors' errors have no common base
        raise ModelLoadError(f"cannot load the weights {_weights_files(folder)}: {_first_line(e)}") from e
    return wrap(model, tokenizer, family=family or record.name, name=folder, **ids)


def _published_layout(folder: str, raw: dict, record: Family, name: str, *, native, trust_remote_code) -> bool:
    """True when ``folder``'s weights are in ``record``'s published layout (or it has none to
    judge by: the native loader then says what is missing); False when they are not but the
    checkpoint ships code the transformers path can run; else a `ModelLoadError` saying why."""
    from fastremask.models import native as native_models

    if native_models.published_layout(folder, raw.get("model_type")) is not False:
        return True
    why = (f"{name}: its weights ({_weights_files(folder)}) have no tensor {record.embedding!r}, so they are not "
           f"in the published {record.name} layout the native forward reads")
    if native is True:
        raise ModelLoadError(why + "; load it with native=False and trust_remote_code=True if it ships its own code")
    if not raw.get("auto_map"):
        raise ModelLoadError(why + ", and it ships no modeling code (no auto_map in config.json)")
    if not trust_remote_code:
        raise ModelLoadError(why + "; it ships its own modeling code (auto_map in config.json): pass "
                             "trust_remote_code=True (CLI: --trust-remote-code) after reading it")
    return False


def _load_native(folder: str, name: str, raw: dict, *, dtype, device, trust_remote_code: bool, ids: dict) -> Adapter:
    from fastremask.models import native

    model = native.from_folder(folder, dtype=dtype, device=device, raw=raw)
    tokenizer = _native_tokenizer(folder, name, trust_remote_code)
    return wrap(model, tokenizer, name=name, **ids)


def _load_transformers(name: str, folder: str | None, raw: dict | None, *, family, native_hint: bool, dtype,
                       device, trust_remote_code: bool, revision, ids: dict) -> Adapter:
    """The transformers path: remote code or a registered model class, and its tokenizer."""
    import transformers

    name_or_folder = folder if folder is not None and folder != name else name    # the hub snapshot
    if raw is not None and trust_remote_code and os.path.isdir(name_or_folder):
        _check_remote_files(raw, name_or_folder, native_hint=native_hint)
    hub = {"revision": revision} if revision and not os.path.isdir(name_or_folder) else {}
    config = _transformers_config(name, name_or_folder, raw, family=family, trust_remote_code=trust_remote_code,
                                  hub=hub)
    family = family or detect_family(getattr(config, "model_type", None), name=name)
    try:
        model = _auto_class(config).from_pretrained(
            name_or_folder, config=config, trust_remote_code=trust_remote_code,
            **_dtype_kwarg(_parse_dtype(dtype)), **hub
        )
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors', torch's and transformers' errors differ
        where = _weights_files(name_or_folder) if os.path.isdir(name_or_folder) else name
        raise ModelLoadError(f"cannot load the weights {where}: {_first_line(e)}{_remote_code_hint(raw)}") from e
    FAMILIES[family].adapter_class().check_model(model, name)
    model = model.to(device).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_folder, trust_remote_code=trust_remote_code,
                                                               **hub)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {name}: {e}") from e
    return wrap(model, tokenizer, family=family, name=name, **ids)


def _transformers_config(name: str, name_or_folder: str, raw: dict | None, *, family, trust_remote_code: bool,
                         hub: dict):
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(name_or_folder, trust_remote_code=trust_remote_code, **hub)
    except ValueError as e:
        if raw is not None and raw.get("auto_map") and not trust_remote_code:
            raise ModelLoadError(
                f"{name} ships its own modeling code (auto_map in config.json); pass "
                "trust_remote_code=True (CLI: --trust-remote-code) after reading it"
            ) from e
        if raw is not None and family is None:
            detect_family(raw.get("model_type"), name=name)  # the clearer message, if it applies
        raise ModelLoadError(f"could not load the config of {name}: {e}{_remote_code_hint(raw)}") from e
    except OSError as e:
        if os.path.isdir(name_or_folder):
            raise ModelLoadError(f"could not load the config of {name}: {_first_line(e)}") from e
        raise ModelLoadError(f"could not find {name} (not a local folder; hub unreachable or no such id): {e}") from e
    except Exception as e:  # noqa: BLE001 - remote configuration code may raise anything
        raise ModelLoadError(f"could not load the config of {name}: {_first_line(e)}{_remote_code_hint(raw)}") from e
