"""`predict` with both heads: its labels reproduce `sbert evaluate`'s accuracy, its probabilities
are the softmax of the saved classifier applied by hand to sentence-transformers' embeddings of
the same folder, the score scale travels with the model, and `sbert predict` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from sbert import SentenceBert
from sbert.cli import main
from sbert.data.readers import read_pairs
from sbert.inference.predict import predict, to_score
from sbert.models.multitask import MultiTaskModel
from sbert.training.config import make_config
from sbert.training.distributed import Processes
from sbert.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
STS_TRAIN = ROOT / "data" / "stsbenchmark" / "sts-train.csv"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
LABELS = ["contradiction", "entailment", "neutral"]


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    """The real checkpoint with a seeded random classifier and SICK's score scale, saved."""
    torch.manual_seed(0)
    model = MultiTaskModel(
        SentenceBert.from_pretrained("all-MiniLM-L6-v2"), LABELS, score_scale=(1.0, 5.0)
    )
    torch.nn.init.normal_(model.classifier.weight, std=0.5)  # decisive: not all one label
    path = tmp_path_factory.mktemp("models") / "real"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny"
    model = MultiTaskModel(SentenceBert.from_config("tiny"), LABELS, score_scale=(0.0, 5.0))
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    model.save(path)
    return path


def sbert(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sbert", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=300,
    )


def test_labels_reproduce_the_accuracy_of_sbert_evaluate(tiny_dir, capsys):
    assert main(["evaluate", "--model", str(tiny_dir), "--data", f"{SICK}@TRIAL"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    pairs = read_pairs(SICK, split="TRIAL").pairs
    predicted = predict(MultiTaskModel.from_pretrained(tiny_dir), pairs, batch_size=128)
    accuracy = 100 * np.mean([p.label == q.label for p, q in zip(predicted, pairs, strict=True)])
    assert accuracy == evaluated["accuracy"]
    assert len({p.label for p in predicted}) > 1  # a classifier that says one thing tests little


def test_probabilities_are_the_classifier_on_sentence_transformers_embeddings(real_dir):
    pairs = read_pairs(SICK, split="TRIAL", limit=40).pairs
    predicted = predict(MultiTaskModel.from_pretrained(real_dir), pairs)
    st = SentenceTransformer(str(real_dir), device="cpu")  # ST loads our saved folder
    u = st.encode([p.a for p in pairs], convert_to_tensor=True)
    v = st.encode([p.b for p in pairs], convert_to_tensor=True)
    head = load_file(real_dir / "classifier.safetensors")
    labels = json.loads((real_dir / "classifier.json").read_text())["labels"]
    logits = torch.cat([u, v, (u - v).abs()], 1) @ head["weight"].T + head["bias"]
    want = torch.softmax(logits, 1).numpy()
    got = np.array([[p.probabilities[name] for name in labels] for p in predicted])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    assert [p.label for p in predicted] == [labels[i] for i in want.argmax(1)]
    cosine = torch.nn.functional.cosine_similarity(u, v).numpy()
    np.testing.assert_allclose([p.similarity for p in predicted], cosine, atol=1e-5)
    np.testing.assert_allclose(
        [p.score for p in predicted], np.clip(1 + 4 * cosine, 1, 5), atol=1e-4
    )


def test_the_score_scale_is_saved_loaded_and_optional(tmp_path, tiny_dir):
    assert MultiTaskModel.from_pretrained(tiny_dir).score_scale == (0.0, 5.0)
    assert to_score(-0.3, (1.0, 5.0)) == 1.0 and to_score(0.5, (1.0, 5.0)) == 3.0
    plain = MultiTaskModel.from_pretrained("all-MiniLM-L6-v2")  # a folder without it
    assert plain.score_scale is None and plain.classifier is None
    (p,) = predict(plain, [("A man plays a guitar.", "Someone plays music.")])
    assert p.label is None and p.probabilities is None and p.score is None
    assert p.to_json().keys() == {"similarity"}


@pytest.mark.parametrize(
    ("train", "scale"),
    [
        ([f"{SICK}@TRAIN"], (1.0, 5.0)),
        ([f"{STS_TRAIN}:regression"], (0.0, 5.0)),
        ([f"{SICK}@TRAIN:classification"], None),
        ([f"{SICK}@TRAIN", str(STS_TRAIN)], None),  # two scales: neither is the answer's
    ],
)
def test_the_trainer_records_the_regression_data_scale(tmp_path, train, scale):
    config = make_config(
        {
            "train": train,
            "model": "tiny",
            "out": str(tmp_path),
            "limit": 8,
            "device": "cpu",
            "no_eval": True,
        }
    )
    trainer = Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes())
    assert trainer.model.score_scale == scale


def test_predict_command_line(tmp_path, tiny_dir):
    pairs = read_pairs(SICK, split="TRIAL", limit=30).pairs
    tsv = tmp_path / "pairs.tsv"
    lines = [f"{p.a}\t{p.b}\n" for p in pairs]
    tsv.write_text("".join(lines[:10]) + "\n" + "".join(lines[10:]))  # a blank line 11
    result = sbert("predict", "--model", tiny_dir, "--input", tsv, "--output", tmp_path / "p.jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    want = predict(MultiTaskModel.from_pretrained(tiny_dir), pairs)
    assert [r["line"] for r in rows] == [*range(1, 11), *range(12, 32)]  # as in the file
    for row, p in zip(rows, want, strict=True):
        assert row.keys() == {"line", "label", "probabilities", "similarity", "score"}
        assert row["label"] == p.label and row["probabilities"].keys() == set(LABELS)
        assert row["similarity"] == pytest.approx(p.similarity, abs=1e-5)
        assert row["probabilities"] == pytest.approx(p.probabilities, abs=1e-5)
        assert row["score"] == pytest.approx(p.score, abs=1e-4)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
    one = sbert("predict", "--model", tiny_dir, pairs[0].a, pairs[0].b)
    assert one.returncode == 0, one.stderr
    first = want[0]
    ranked = sorted(first.probabilities.items(), key=lambda kv: kv[1], reverse=True)
    assert one.stdout.splitlines() == [
        f"label:       {first.label} ({first.probabilities[first.label]:.1%})",
        "             " + ", ".join(f"{k} {v:.1%}" for k, v in ranked),  # most likely first
        f"similarity:  {first.similarity:.4f} (cosine)",
        f"score:       {first.score:.2f} on the training scale [0, 5]",
    ]


def test_a_model_without_classifier_says_so_once(tmp_path):
    folder = tmp_path / "encoder"
    torch.manual_seed(0)
    SentenceBert.from_config("tiny").save(folder)
    data = tmp_path / "pairs.tsv"
    data.write_text("a cat\ta dog\nrain\tsun\n")
    result = sbert("predict", "--model", folder, "--input", data, "--output", tmp_path / "p.jsonl")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("has no classifier: similarity only") == 1
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r.keys() for r in rows] == [{"line", "similarity"}] * 2


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_dir):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("a cat\ta dog\nno tab on this line\n")
    result = sbert("predict", "--model", tiny_dir, "--input", bad, "--output", tmp_path / "p.jsonl")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "pairs.tsv:2" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.tsv"]
    assert main(["predict", "--model", str(tiny_dir), "only one sentence"]) == 2


def test_evaluate_scores_only_the_objective_a_spec_names(tiny_dir, capsys):
    def evaluated(spec: str) -> dict:
        assert main(["evaluate", "--model", str(tiny_dir), "--data", spec]) == 0
        return json.loads(capsys.readouterr().out)

    both = evaluated(f"{SICK}@TRIAL")
    regression, classification = (
        evaluated(f"{SICK}@TRIAL:regression"),
        evaluated(f"{SICK}@TRIAL:classification"),
    )
    assert {"accuracy", "spearman"} <= both.keys()
    assert regression == {k: v for k, v in both.items() if k != "accuracy"}
    assert classification["accuracy"] == both["accuracy"]
    assert not {"spearman", "pearson"} & classification.keys()
    assert main(["evaluate", "--model", str(tiny_dir), "--data", f"{STS_DEV}:classification"]) == 2
    assert "asks for classification: its pairs have no labels" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scale", [{"lo": 5, "hi": 1}, {"lo": 1, "hi": 1}, {"lo": 0, "hi": "5"}, {"lo": 0, "hi": 1e999}]
)
def test_a_score_scale_that_maps_nothing_is_refused(tmp_path, scale):
    """lo + cos * (hi - lo) needs finite numbers lo < hi: a reversed scale answered scores
    upside down."""
    from sbert.errors import CheckpointError
    from sbert.heads import SCORE_SCALE, read_score_scale

    (tmp_path / SCORE_SCALE).write_text(json.dumps(scale).replace("Infinity", "1e999"))
    with pytest.raises(CheckpointError, match="expected finite numbers 'lo' < 'hi'"):
        read_score_scale(tmp_path)
