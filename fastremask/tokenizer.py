"""A character-level tokenizer for the built-in tiny model, so text goes in and out offline.

`CharTokenizer` maps each ASCII character to its own code point (printable ``' '..'~'``, tab and
newline), reserves a few low ids for special tokens and takes the last id of the vocabulary as
the mask token, which is where `fastremask.tiny.TinyConfig` puts its mask id (``vocab_size - 1``,
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

__all__ = ["CharTokenizer"]

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
    """Character-level tokenizer over ASCII; ids 0..6 special, the last id the mask token."""

    chat_template = "char-template"  # a marker: `apply_chat_template` is implemented in Python

    def __init__(self, vocab_size: int = 128):
        if vocab_size < 128:
            raise ValueError(f"CharTokenizer needs vocab_size >= 128 (ASCII), got {vocab_size}")
        self.vocab_size = vocab_size
        self._id_to_token = {i: chr(i) for i in range(32, 127)}
        self._id_to_token.update({9: "\t", 10: "\n"})
        self._id_to_token.update(SPECIAL_TOKENS)
        self._id_to_token[vocab_size - 1] = MASK_TOKEN
        self._token_to_id = {t: i for i, t in self._id_to_token.items()}
        self.pad_token, self.bos_token, self.eos_token = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1], SPECIAL_TOKENS[2]
        self.mask_token = MASK_TOKEN
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self.eot_token_id = 3
        self.mask_token_id = vocab_size - 1
        self.all_special_ids = sorted(set(SPECIAL_TOKENS) | {self.mask_token_id})

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of ``text``, one per character; special-token strings in the text are kept whole."""
        ids: list[int] = []
        i = 0
        while i < len(text):
            if text[i] == "<":
                end = text.find("|>", i)
                if end != -1 and text[i : end + 2] in self._token_to_id:
                    ids.append(self._token_to_id[text[i : end + 2]])
                    i = end + 2
                    continue
            ids.append(self._token_to_id.get(text[i], ord("?")))
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
        text = ""
        for m in messages:
            role = m["role"]
            if role not in _ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected one of {sorted(_ROLES)}")
            text += _ROLES[role] + m["content"] + SPECIAL_TOKENS[3]
        if add_generation_prompt:
            text += _ROLES["assistant"]
        return self.encode(text) if tokenize else text
