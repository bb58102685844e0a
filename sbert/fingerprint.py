"""Which model made a vector: a fingerprint, so that an index never compares a query with
vectors of another model (search.py refuses the mismatch).

The rule: a fingerprint names the vectors a model gives, to fp32 precision.
- A PyTorch model: sha256 of its config, tokenizer, pooling and every weight.
- An ONNX export running its fp32 graph: the fingerprint of the model it was exported from,
  recorded by `sbert export`. Its vectors equal that model's to <= 1e-5 max abs
  (tests/test_onnx.py), so an index built with either takes queries from the other.
- Any other graph (the int8 one; an export from before the fingerprint was recorded): sha256 of
  the graph file and the tokenizer settings. int8 vectors differ from fp32 ones by more than
  rounding (cosine to fp32 ~0.99), so an int8 export has a fingerprint of its own.

Importing this module imports no torch: an ONNX export is fingerprinted without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from .onnx_runner import OnnxEncoder

if TYPE_CHECKING:
    from .model import SentenceBert


def fingerprint(model: SentenceBert | OnnxEncoder) -> str:
    """16 hex digits naming the vectors `model` gives (see the module's docstring)."""
    h = hashlib.sha256()
    tok = model.tokenizer
    if isinstance(model, OnnxEncoder):
        record = model.record
        if model.graph == record.get("graphs", {}).get("fp32") and record.get("fingerprint"):
            return str(record["fingerprint"])
        settings = [record.get("pooling"), record.get("normalize")]
        settings += [tok.max_length, tok.lowercase, tok.tokenizer.to_str()]
        h.update(json.dumps(settings, sort_keys=True).encode())
        with open(model.folder / model.graph, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    import torch  # a PyTorch model: torch is there

    settings = [
        dataclasses.asdict(model.bert.config),
        model.pooling,
        model.normalize,
        tok.max_length,
        tok.lowercase,
        tok.tokenizer.to_str(),
    ]
    h.update(json.dumps(settings, sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
