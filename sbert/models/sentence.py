"""SentenceBert: tokenizer + BERT encoder + pooling (+ L2 normalisation), and `encode`.

It satisfies the `Encoder` protocol (sbert/inference/encoder.py) that the ONNX runner satisfies
too, so everything that uses a model (predict, search, retrieval) takes either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbert.errors import ConfigError
from sbert.fileio import atomic_dir
from sbert.fingerprint import digest
from sbert.folders import DEFAULT_MODEL, is_model_folder, resolve
from sbert.heads import Heads
from sbert.models import folder as model_folder
from sbert.models.bert import Bert, BertConfig, preset
from sbert.models.device import to_device
from sbert.models.pooling import PoolingMode, pool
from sbert.tokenizer import WordPiece, length_batches


class SentenceBert(nn.Module):
    """A sentence encoder: sentences -> fixed-size vectors (Reimers & Gurevych, 2019, §3).

    Args:
        bert: the BERT encoder.
        tokenizer: WordPiece tokenizer; its max_length bounds every sentence.
        pooling: "mean" (default, SBERT §3), "cls" or "max".
        normalize: L2-normalise every sentence vector (sentence-transformers' `Normalize`).
    Shapes:
        forward: input_ids, attention_mask (B, T) -> (B, H); token_index (N,) the real
        tokens' flat positions, if given (`sbert.models.bert.RealTokens`: padding skipped).
    """

    def __init__(
        self,
        bert: Bert,
        tokenizer: WordPiece,
        pooling: PoolingMode = "mean",
        normalize: bool = False,
    ):
        super().__init__()
        self.bert, self.tokenizer = bert, tokenizer
        self.pooling, self.normalize = pooling, normalize

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def heads(self) -> Heads:
        """An encoder alone has no heads; a `MultiTaskModel` has its classifier's."""
        return Heads()

    def fingerprint(self) -> str:
        """Which vectors this model gives: config, tokenizer, pooling and every weight
        (sbert/fingerprint.py)."""
        tok = self.tokenizer
        settings = [dataclasses.asdict(self.bert.config), self.pooling, self.normalize]
        settings += [tok.max_length, tok.lowercase, tok.tokenizer.to_str()]
        return digest(settings, self._weight_bytes())

    def _weight_bytes(self) -> Iterator[bytes]:
        for key, tensor in sorted(self.state_dict().items()):
            yield key.encode()
            yield tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        token_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.bert(input_ids, attention_mask, token_type_ids, token_index)
        return self.sentence_vectors(hidden, attention_mask)

    def sentence_vectors(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token vectors (B, T, H) -> pooled (and normalised) sentence vectors (B, H)."""
        x = pool(hidden, attention_mask, self.pooling)
        return F.normalize(x, dim=-1) if self.normalize else x

    def truncate(self, max_length: int) -> None:
        """Truncate sentences to `max_length` tokens from now on (at most the position table)."""
        positions = self.bert.config.max_position_embeddings
        if max_length > positions:
            raise ConfigError(
                f"--max-seq-length {max_length} is beyond this model's {positions} positions"
            )
        tok = self.tokenizer
        self.tokenizer = WordPiece(tok.tokenizer, max_length, tok.lowercase)

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.ids(sentences)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        device: str | torch.device | None = None,
        show_progress_bar: bool = False,
        *,
        convert_to_tensor: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed sentences, in input order; the arguments in the `Encoder` protocol's order
        (sbert/inference/encoder.py), so that any encoder takes the same positional call.

        Returns:
            float32 array (N, H), or a tensor on `device` if `convert_to_tensor`; a single
            string gives a single vector (H,).
        """
        single = isinstance(sentences, str)
        ids = self.tokenize([sentences] if single else sentences)  # checked: text_list
        out = self.encode_ids(ids, batch_size, device, show_progress_bar)
        if normalize:
            out = F.normalize(out, dim=-1)
        if single:
            out = out[0]
        return out if convert_to_tensor else out.cpu().numpy()

    @torch.inference_mode()
    def encode_ids(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int = 32,
        device: str | torch.device | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Embed already-tokenized sentences: (N, H) float32 on `device`, in input order.

        Sentences are batched by length (`length_batches`), then the vectors are put back in
        input order, once at the end: on a GPU no batch waits for the one before (`to_device`).
        """
        device = torch.device(device) if device is not None else self.device
        was_training = self.training
        self.eval().to(device)
        out = torch.empty((len(ids), self.dim), dtype=torch.float32, device=device)
        batches = length_batches(ids, batch_size)
        order = torch.tensor([i for index in batches for i in index], dtype=torch.long)
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="encode", unit="batch")
        vectors = []
        for index in batches:
            batch = self.tokenizer.pad([ids[i] for i in index])
            vectors.append(self(**{k: to_device(v, device) for k, v in batch.items()}).float())
        if vectors:
            out[to_device(order, device)] = torch.cat(vectors)
        self.train(was_training)
        return out

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL) -> SentenceBert:
        """Load a Hugging Face BERT folder, a sentence-transformers folder, or a packaged name.

        An `sbert export` folder has no PyTorch weights: `sbert.load` runs it on ONNX Runtime.
        """
        return cls.from_files(model_folder.read_model(name_or_path))

    @classmethod
    def from_files(cls, files: model_folder.ModelFiles) -> SentenceBert:
        """The encoder of a model folder already read (`models.folder.read_model`)."""
        layout = files.layout
        return cls(files.bert, files.tokenizer, layout.pooling, layout.normalize)

    @classmethod
    def from_config(
        cls,
        config: str | BertConfig = "bert-base",
        vocab: str | Path = DEFAULT_MODEL,
        max_seq_length: int | None = None,
        pooling: PoolingMode = "mean",
        normalize: bool = False,
    ) -> SentenceBert:
        """A randomly initialised model (BERT init) with a preset and the tokenizer of `vocab`.

        Args:
            config: a preset name ("bert-base", "bert-large", "tiny") or a BertConfig.
            vocab: a model folder (or packaged name) whose tokenizer to use; the config's
                vocab_size is set to that tokenizer's.
            max_seq_length: defaults to the position table's size.
        """
        layout = model_folder.read_layout(resolve(vocab))
        probe = WordPiece.from_folder(layout.transformer, 512)
        if isinstance(config, str):
            config = preset(config, vocab_size=probe.vocab_size)
        max_len = min(
            max_seq_length or config.max_position_embeddings, config.max_position_embeddings
        )
        tokenizer = WordPiece.from_folder(layout.transformer, max_len, layout.lowercase)
        return cls(Bert(config), tokenizer, pooling, normalize)

    def save(self, path: str | Path) -> None:
        """Write a folder that this class, sentence-transformers and transformers all load.

        The folder is built under a temporary name and renamed into place: a crash leaves either
        the old folder or the new one, never a mix.
        """
        with atomic_dir(Path(path), is_model_folder, "a model folder") as tmp:
            self.write(tmp)

    def write(self, folder: Path, weights: bool = True) -> None:
        """Write the model's files into an existing, empty `folder` (not atomic: see `save`);
        weights=False leaves out model.safetensors (for an ONNX export, see export.py)."""
        tok = self.tokenizer
        layout = model_folder.Layout(
            folder, tok.max_length, tok.lowercase, self.pooling, self.normalize
        )
        model_folder.write_folder(folder, self.bert, layout, tok, weights)
