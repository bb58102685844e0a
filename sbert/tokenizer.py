"""WordPiece tokenization through the `tokenizers` library; padding to a batch's longest.

This module does not import torch at load time: the ONNX runner (`onnx_runner.py`) tokenizes and
pads with it where torch is not installed. Only `pad`/`pad_ids`, which return tensors, need it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.normalizers import BertNormalizer, Lowercase
from tokenizers.normalizers import Sequence as NormalizerSequence

from sbert.errors import CheckpointError, whole_number
from sbert.fileio import json_field, read_bounded, read_json, write_error

if TYPE_CHECKING:
    import torch

_SURROGATE = re.compile("[\ud800-\udfff]")
T = TypeVar("T")
# BertNormalizer's arguments and defaults, and the tokenizer_config.json keys that set them:
# transformers' BertTokenizer (5) builds its normaliser from those keys, or these defaults,
# whatever tokenizer.json holds, so a cased or accent-keeping model says so there. AutoTokenizer
# makes a folder's tokenizer a BertTokenizer where tokenizer_config.json names that class or
# none (config.json's model_type bert then decides); another class (PreTrainedTokenizerFast)
# keeps tokenizer.json's normaliser (tests/models/test_pretrained.py compares the ids).
BERT_CLASSES = frozenset({None, "BertTokenizer", "BertTokenizerFast"})
BERT_NORMALIZER = {"clean_text": True, "handle_chinese_chars": True, "strip_accents": None,
                   "lowercase": True}  # fmt: skip
_NORMALIZER_KEYS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                    "tokenize_chinese_chars": "handle_chinese_chars"}  # fmt: skip


class WordPiece:
    """A BERT tokenizer: text -> token ids with [CLS] ... [SEP], truncated to `max_length`.

    Args:
        tokenizer: a `tokenizers.Tokenizer` holding the vocabulary and normaliser.
        max_length: the most tokens per sentence, special tokens included.
        lowercase: lower-case the text, on top of what the tokenizer does
            (sentence-transformers' `do_lower_case`): as sentence-transformers 6 does it, a
            Lowercase step put first in the normaliser unless one is there already, so that
            special tokens written in a text ("[SEP]") are found before it is lower-cased.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, lowercase: bool = False):
        self.tokenizer = tokenizer
        # [CLS], [SEP] and room for one word; below that `tokenizers` stops truncating at all.
        self.max_length = whole_number(max_length, "max_seq_length", least=3)
        self.lowercase = lowercase
        normalizer = tokenizer.normalizer
        if lowercase and not _has_lowercase(normalizer):
            steps = list(normalizer) if isinstance(normalizer, NormalizerSequence) else [normalizer]
            tokenizer.normalizer = NormalizerSequence([Lowercase(), *filter(None, steps)])
        tokenizer.no_padding()  # we pad per batch, to the batch's longest sentence only
        tokenizer.enable_truncation(max_length)
        pad_id = tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    @classmethod
    def from_folder(cls, folder: Path, max_length: int, lowercase: bool = False) -> WordPiece:
        """Load `tokenizer.json`, or else build WordPiece from `vocab.txt`, normalising text as
        `tokenizer_config.json` sets casing, accents and CJK splitting (BERT's defaults where it
        is silent), as transformers' BertTokenizer does.

        Either is read only if it is a regular file of bounded size (fileio.read_bounded), and
        refused unless it tokenizes: a vocabulary without [UNK], [CLS] or [SEP] is a
        CheckpointError naming it, not a failure at the first sentence.
        """
        path, config_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
        config = read_json(config_path) if os.path.lexists(config_path) else {}
        settings = normalizer_settings(config_path, config)
        if config.get("truncation_side", "right") != "right":  # we keep a text's first tokens
            raise CheckpointError(
                config_path, f"truncation_side {config['truncation_side']!r}: only 'right' (a "
                             f"long text's first tokens kept) is supported"
            )  # fmt: skip
        if os.path.lexists(path):
            text = _text(path)
            tok = _read(path, lambda: Tokenizer.from_str(text))
            if config.get("tokenizer_class") in BERT_CLASSES:  # rebuilt, as transformers does
                tok.normalizer = BertNormalizer(**{**BERT_NORMALIZER, **settings})
            return cls._checked(tok, max_length, lowercase, path)
        path = folder / "vocab.txt"
        if os.path.lexists(path):
            _text(path)  # a regular file of bounded size, UTF-8; then `tokenizers` reads it
            name, args = str(path), {**BERT_NORMALIZER, **settings}
            tok = _read(path, lambda: BertWordPieceTokenizer(name, **args)._tokenizer)
            return cls._checked(tok, max_length, lowercase, path)
        raise CheckpointError(folder, "no tokenizer.json or vocab.txt: cannot build the tokenizer")

    @classmethod
    def _checked(
        cls, tokenizer: Tokenizer, max_length: int, lowercase: bool, path: Path
    ) -> WordPiece:
        """A WordPiece of `tokenizer`, refused (naming `path`) unless it tokenizes a probe with
        an unknown word: a missing [UNK] token fails only there, inside `tokenizers`."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise CheckpointError(path, f"the vocabulary has no {', '.join(missing)} token")
        wordpiece = cls(tokenizer, max_length, lowercase)
        _read(path, lambda: wordpiece.ids(["a probe: qzxjv \u2603"]))
        return wordpiece

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def check_fits(self, vocab_size: int, config: Path) -> None:
        """Refuse a tokenizer whose ids would index past an embedding table of `vocab_size`
        rows (from the file `config`, beside the tokenizer's own file)."""
        token, largest = max(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        if largest >= vocab_size:  # a token count within the table says nothing of the ids
            json_file = os.path.lexists(config.parent / "tokenizer.json")
            name = "tokenizer.json" if json_file else "vocab.txt"
            raise CheckpointError(
                config.parent / name,
                f"token {token!r} has id {largest}, but {config} has vocab_size {vocab_size}: "
                f"it would index past the embedding table",
            )

    def ids(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of each sentence, [CLS] and [SEP] included, no padding."""
        return [e.ids for e in self._encode(sentences)]

    def lengths(self, sentences: Sequence[str]) -> tuple[list[int], list[bool]]:
        """Tokens of each sentence as the model sees it ([CLS] and [SEP] included, at most
        `max_length`), and whether truncation cut the sentence."""
        encodings = self._encode(sentences)
        return [len(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings]

    def _encode(self, sentences: Sequence[str]) -> list:
        sentences = text_list(sentences, "sentences")
        # sentence-transformers strips surrounding whitespace before tokenizing; so do we.
        texts = [s.strip() for s in sentences]
        # A lone surrogate (e.g. from os.fsdecode) cannot cross into `tokenizers`, which raises
        # an obscure TypeError: replace it with U+FFFD, as a UTF-8 decoder replaces a bad byte.
        texts = [_SURROGATE.sub("\ufffd", t) for t in texts]
        return self.tokenizer.encode_batch(texts)

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return pad_ids(ids, self.pad_id)

    def pad_arrays(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        return pad_arrays(ids, self.pad_id)

    def save(self, folder: Path) -> None:
        """Write tokenizer.json, vocab.txt and the configs transformers' AutoTokenizer reads."""
        try:
            self.tokenizer.save(str(folder / "tokenizer.json"))
        except Exception as e:  # `tokenizers` raises a bare Exception on a full disk
            raise write_error(e, folder / "tokenizer.json") from None
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab))
        normalizer = json.loads(self.tokenizer.to_str()).get("normalizer") or {}
        # A BertNormalizer is written as the settings a BertTokenizer rebuilds it from; any
        # other normaliser is kept by naming a class that reads tokenizer.json as it is.
        bert = normalizer.get("type") == "BertNormalizer"
        settings = {key: normalizer.get(argument, BERT_NORMALIZER[argument])
                    for key, argument in _NORMALIZER_KEYS.items()}  # fmt: skip
        config = {
            "tokenizer_class": "BertTokenizer" if bert else "PreTrainedTokenizerFast",
            **(settings if bert else {}),
            "model_max_length": self.max_length,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        special = {k: config[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token")}
        special["mask_token"] = "[MASK]"
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _has_lowercase(normalizer) -> bool:
    """Whether a normaliser is, or holds, a Lowercase step (sentence-transformers' test)."""
    if isinstance(normalizer, NormalizerSequence):
        return any(isinstance(n, Lowercase) for n in normalizer)
    return isinstance(normalizer, Lowercase)


def normalizer_settings(path: Path, config: dict) -> dict:
    """The BertNormalizer arguments that `config`, read from tokenizer_config.json at `path`,
    sets (none where it is silent); a value that is not true or false is refused: "false" is
    no boolean."""
    return {
        argument: json_field(path, config, key, bool)
        for key, argument in _NORMALIZER_KEYS.items()
        if config.get(key) is not None
    }


def _text(path: Path) -> str:
    """A tokenizer file's text: a regular file of bounded size, UTF-8."""
    try:
        return read_bounded(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(path, f"unreadable tokenizer (not UTF-8: {e})") from None


def _read(path: Path, load: Callable[[], T]) -> T:
    try:
        return load()
    except Exception as e:  # `tokenizers` raises bare Exception (and TypeError) for bad files
        raise CheckpointError(path, f"unreadable tokenizer ({e})") from None


def max_seq_length(
    path: Path,
    record: dict,
    key: str,
    positions: int,
    positions_path: Path,
    default: int | None = None,
) -> int:
    """The truncation length `record[key]` (else `default`, else `positions`): never past the
    position table (`positions` embeddings, from `positions_path`), which a longer sentence
    would index beyond."""
    length = json_field(path, record, key, int, 3, default=default or positions)  # see WordPiece
    if length > positions:
        raise CheckpointError(
            path,
            f"{key} {length} exceeds the {positions} position embeddings of {positions_path}",
        )
    return length


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """`pad_arrays` as tensors."""
    import torch  # here, not at the top: the module must load without torch (see above)

    return {k: torch.from_numpy(v) for k, v in pad_arrays(ids, pad_id).items()}


def pad_arrays(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Pad token ids to the longest in the batch: input_ids and attention_mask, (B, T) int64."""
    longest = max(map(len, ids))
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        attention_mask[row, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def text_list(texts: Sequence[str], name: str) -> list[str]:
    """`texts` as a list of strings. A lone string or bytes is refused, not split into its
    characters, and so is an item that is not a string (None, bytes, a number): a TypeError
    naming it, not an AttributeError from inside the tokenizer."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name}: expected a list of strings, not one {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, not a string: {text!r}"[:200])
    return texts


def length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` in batches of `batch_size`, longest sentences first: each batch then pads
    to a similar length, so little compute is spent on padding."""
    batch_size = whole_number(batch_size, "batch_size")
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
