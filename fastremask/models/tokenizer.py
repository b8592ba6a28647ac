"""A character-level tokenizer for the built-in tiny model, so text goes in and out offline.

`CharTokenizer` maps each ASCII character to its own code point (printable ``' '..'~'``, tab and
newline), reserves a few low ids for special tokens and takes the last id of the vocabulary as
the mask token, which is where `fastremask.models.tiny.TinyConfig` puts its mask id (``vocab_size - 1``,
127 for the default vocab of 128)::

    0 <|pad|>   1 <|startoftext|>   2 <|endoftext|> (EOS)   3 <|eot_id|> (EoT)
    4 <|user|>  5 <|assistant|>     6 <|system|>            9 '\\t'   10 '\\n'
    32..126 the printable ASCII characters                  127 <|mdm_mask|>

Any other character is encoded as ``'?'``. It offers the part of the Hugging Face tokenizer
interface that fastremask uses (``encode``, ``decode``, ``convert_ids_to_tokens``,
``apply_chat_template``, ``mask_token_id``, ``eos_token_id``, ``pad_token_id``, ``len()``), so
the adapters in `fastremask.models` treat it like any other tokenizer.
"""
from __future__ import annotations

__all__ = ["CharTokenizer", "TASK_VOCAB", "tiny_tokenizer"]

# The 16-token vocabulary of the demo tasks (`fastremask.evaluation.tasks`, which reads it from
# here): digits 0-9 are ids 0-9, then + = , > <pad> <mask> (the mask id is vocab_size - 1).
TASK_VOCAB: tuple = tuple("0123456789") + ("+", "=", ",", ">", "<pad>", "<mask>")

SPECIAL_TOKENS = {
    0: "<|pad|>",
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    3: "<|eot_id|>",
    4: "<|user|>",
    5: "<|assistant|>",
    6: "<|system|>",
}
MASK_TOKEN = "<|mdm_mask|>"
_ROLES = {"user": "<|user|>", "assistant": "<|assistant|>", "system": "<|system|>"}


class CharTokenizer:
    """Character-level tokenizer: one id per character (or per whole special-token string).

    ``CharTokenizer(vocab_size)``: the ASCII layout above. `from_tokens` builds one over any
    list of token strings (id = index), e.g. the 16-token vocabulary of `fastremask.evaluation.tasks`.
    """

    def __init__(self, vocab_size: int = 128):
        if vocab_size < 128:
            raise ValueError(f"CharTokenizer needs vocab_size >= 128 (ASCII), got {vocab_size}")
        id_to_token = {i: chr(i) for i in range(32, 127)}
        id_to_token.update({9: "\t", 10: "\n"})
        id_to_token.update(SPECIAL_TOKENS)
        id_to_token[vocab_size - 1] = MASK_TOKEN
        self._setup(vocab_size, id_to_token, pad="<|pad|>", bos="<|startoftext|>", eos="<|endoftext|>",
                    eot="<|eot_id|>", mask=MASK_TOKEN, unknown="?")
        self.chat_template = "<|user|>{content}<|eot_id|><|assistant|>"  # `apply_chat_template` is Python

    @classmethod
    def from_tokens(cls, tokens, *, pad: str | None = None, eos: str | None = None, eot: str | None = None,
                    mask: str | None = None) -> "CharTokenizer":
        """A tokenizer over ``tokens`` (id = index; no chat template; unknown characters are
        an error)."""
        self = cls.__new__(cls)
        self._setup(len(tokens), dict(enumerate(tokens)), pad=pad, bos=None, eos=eos, eot=eot, mask=mask,
                    unknown=None)
        self.chat_template = None
        return self

    def _setup(self, vocab_size, id_to_token, *, pad, bos, eos, eot, mask, unknown):
        self.vocab_size = vocab_size
        self._id_to_token = id_to_token
        self._token_to_id = {t: i for i, t in id_to_token.items()}
        self._unknown = unknown
        self._long = sorted((t for t in self._token_to_id if len(t) > 1), key=len, reverse=True)
        ids = {name: self._token_to_id.get(t) if t is not None else None
               for name, t in dict(pad=pad, bos=bos, eos=eos, eot=eot, mask=mask).items()}
        self.pad_token, self.bos_token, self.eos_token, self.mask_token = pad, bos, eos, mask
        self.pad_token_id, self.bos_token_id, self.eos_token_id = ids["pad"], ids["bos"], ids["eos"]
        self.eot_token_id, self.mask_token_id = ids["eot"], ids["mask"]
        self.all_special_ids = sorted(i for t, i in self._token_to_id.items() if len(t) > 1)
        # ids with no token: `fastremask generate` suppresses them (an untrained model picks them)
        self.unused_ids = [i for i in range(vocab_size) if i not in id_to_token]

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of ``text``, one per character; special-token strings in the text are kept whole."""
        ids: list[int] = []
        i = 0
        while i < len(text):
            long = next((t for t in self._long if text.startswith(t, i)), None)
            if long is not None:
                ids.append(self._token_to_id[long])
                i += len(long)
                continue
            tid = self._token_to_id.get(text[i])
            if tid is None:
                if self._unknown is None:
                    raise ValueError(f"character {text[i]!r} is not in the vocabulary "
                                     f"{[self._id_to_token[k] for k in sorted(self._id_to_token)]}")
                tid = self._token_to_id[self._unknown]
            ids.append(tid)
            i += 1
        return ids

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._id_to_token.get(ids, f"<|unused_{ids}|>")
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens)
        return [self._token_to_id.get(t) for t in tokens]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        special = set(self.all_special_ids)
        out = []
        for i in ids:
            i = int(i)
            if skip_special_tokens and (i in special or i not in self._id_to_token):
                continue
            out.append(self.convert_ids_to_tokens(i))
        return "".join(out)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = True, **_):
        """``<|user|>content<|eot_id|>`` per message, then ``<|assistant|>`` when asked."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text = ""
        for m in messages:
            role = m["role"]
            if role not in _ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected one of {sorted(_ROLES)}")
            text += _ROLES[role] + m["content"] + SPECIAL_TOKENS[3]
        if add_generation_prompt:
            text += _ROLES["assistant"]
        return self.encode(text) if tokenize else text


def tiny_tokenizer(vocab_size: int, folder=None):
    """The tokenizer of a `TinyMaskedLM`: for a folder with ``demo.json`` (a trained demo
    model) the vocabulary it names (``"vocab"``; without one, `TASK_VOCAB`) when its size is
    the model's; the ASCII `CharTokenizer` for a vocab of 128 or more; else None (token ids
    only)."""
    from fastremask.models.demo import read_demo

    meta = read_demo(folder) if folder is not None else None
    if meta is not None:
        vocab = tuple(meta.get("vocab") or TASK_VOCAB)
        if vocab_size == len(vocab):
            pad = "<pad>" if "<pad>" in vocab else None
            mask = "<mask>" if "<mask>" in vocab else None
            return CharTokenizer.from_tokens(vocab, pad=pad, mask=mask)
    if vocab_size >= 128:
        return CharTokenizer(vocab_size)
    return None
