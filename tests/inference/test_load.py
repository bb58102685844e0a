"""`sbert.load`: one loader for a model folder and an export folder, each read once, both giving
an `Encoder` with the same vectors, fingerprint and heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sbert
from sbert import ConfigError, MultiTaskModel, SentenceBert
from sbert.inference.onnx_runner import OnnxEncoder
from sbert.models import folder as model_folder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

LABELS = ["contradiction", "entailment", "neutral"]
TEXTS = ["a cat sits on the mat", "it rains", "a dog runs in the park today"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("load")
    torch.manual_seed(0)
    MultiTaskModel(SentenceBert.from_config("tiny"), LABELS, (1.0, 5.0)).save(root / "model")
    sbert.export(root / "model", root / "export")
    return {"model": root / "model", "export": root / "export"}


def test_one_loader_for_both_kinds_with_the_same_heads_and_vectors(folders):
    model, export = sbert.load(folders["model"]), sbert.load(folders["export"])
    assert isinstance(model, MultiTaskModel) and isinstance(export, OnnxEncoder)
    for encoder in (model, export):
        assert encoder.dim == 32 and encoder.max_seq_length == model.encoder.tokenizer.max_length
        assert encoder.heads.classifier.labels == LABELS
        assert encoder.heads.score_scale == (1.0, 5.0)
    np.testing.assert_array_equal(model.heads.classifier.weight, export.heads.classifier.weight)
    assert model.fingerprint() == export.fingerprint()
    np.testing.assert_allclose(model.encode(TEXTS), export.encode(TEXTS), atol=1e-5, rtol=0)


def test_a_model_folder_is_read_once(folders, monkeypatch):
    calls = {"read_layout": 0, "read_weights": 0, "verify_manifest": 0}
    for name in calls:
        original = getattr(model_folder, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model_folder, name, counted)
    sbert.load(folders["model"])
    assert calls == {"read_layout": 1, "read_weights": 1, "verify_manifest": 1}


def test_the_pytorch_classes_refuse_an_export_and_say_what_loads_it(folders):
    with pytest.raises(ConfigError, match="an ONNX export has no PyTorch weights.*sbert.load"):
        SentenceBert.from_pretrained(folders["export"])
    with pytest.raises(ConfigError, match="an ONNX export has no PyTorch weights"):
        MultiTaskModel.from_pretrained(folders["export"])
