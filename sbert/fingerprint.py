"""Which model made a vector: a fingerprint, so that an index never compares a query with
vectors of another model (sbert/inference/index.py refuses the mismatch).

The rule: a fingerprint names the vectors a model gives, to fp32 precision.
- A PyTorch model (`SentenceBert.fingerprint`): sha256 of its config, tokenizer, pooling and
  every weight.
- An ONNX export running its fp32 graph (`OnnxEncoder.fingerprint`): the fingerprint of the
  model it was exported from, recorded by `sbert export`. Its vectors equal that model's to
  <= 1e-5 max abs (tests/inference/test_export.py), so an index built with either takes queries
  from the other.
- Any other graph (the int8 one; an export from before the fingerprint was recorded): sha256 of
  the graph file and the tokenizer settings. int8 vectors differ from fp32 ones by more than
  rounding (cosine to fp32 ~0.99), so an int8 export has a fingerprint of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable


def digest(settings: list, blocks: Iterable[bytes]) -> str:
    """16 hex digits of sha256 over the settings (as sorted JSON), then the byte blocks."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for block in blocks:
        h.update(block)
    return h.hexdigest()[:16]
