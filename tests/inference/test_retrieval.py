"""The retrieval evaluator against sentence-transformers' InformationRetrievalEvaluator on the
real checkpoint, the STS-B dev retrieval set, and the metrics on a hand-made ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from sbert import ConfigError, DataError, SentenceBert
from sbert.cli import main
from sbert.data.readers import read_pairs
from sbert.folders import resolve
from sbert.inference.retrieval import (
    RetrievalSet,
    evaluate_retrieval,
    ranking_metrics,
    retrieval_set_from_pairs,
)

ROOT = Path(__file__).resolve().parents[2]
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"


def test_the_sts_dev_retrieval_set():
    data = retrieval_set_from_pairs(str(STS_DEV), 4.0)
    assert len(set(data.corpus)) == len(data.corpus)  # distinct texts: no ties between copies
    gold = [(p.a, p.b) for p in read_pairs(STS_DEV).pairs if p.score >= 4.0]
    found = {
        (q, data.corpus[i]) for q, rel in zip(data.queries, data.relevant, strict=True) for i in rel
    }
    assert found == set(gold)
    with pytest.raises(DataError, match="no pair scores"):
        retrieval_set_from_pairs(str(STS_DEV), 6.0)
    # A range of the pairs is read as training data's is (it was silently ignored).
    first = retrieval_set_from_pairs(f"{STS_DEV}[0:40]", 4.0)
    pairs = read_pairs(STS_DEV, limit=40).pairs
    assert first.corpus == list(dict.fromkeys(p.b for p in pairs))
    assert first.queries == list(dict.fromkeys(p.a for p in pairs if p.score >= 4.0))


def test_metrics_of_a_hand_made_ranking():
    # Query 1: relevant {2} found at rank 2; query 2: relevant {0, 5}, 5 at rank 1, 0 missed.
    m = ranking_metrics([[7, 2, 3], [5, 1, 4]], [{2}, {0, 5}])
    assert m["accuracy@1"] == 0.5 and m["mrr@10"] == (0.5 + 1) / 2
    assert m["recall@1"] == (0 + 0.5) / 2 and m["recall@3"] == (1 + 0.5) / 2
    ndcg_1 = (1 / 1.5849625007211562) / 1.0
    ndcg_2 = 1.0 / (1 + 1 / 1.5849625007211562)
    assert m["ndcg@10"] == pytest.approx((ndcg_1 + ndcg_2) / 2, abs=1e-12)


def test_metrics_equal_information_retrieval_evaluators_past_every_cut_off():
    """Rankings that reach past each metric's cut-off: 12 relevant ids (nDCG@10's ideal), a
    first hit at rank 11 (MRR@10), relevant ids past rank 100 and 110 of them (MAP@100 and its
    denominator), against sentence-transformers' own computation of the same rankings."""
    ranked = [
        list(range(150)),  # 12 relevant, some in the top 10, some past 100
        [*range(100, 110), 5, *range(110, 140)],  # the first hit at rank 11
        [7, 2, 3],  # the hand-made ranking's queries
        [5, 1, 4],
        list(range(150)),  # 110 relevant: more than MAP@100 can find
    ]
    relevant = [{0, 3, 9, 11, 14, 20, 40, 60, 99, 101, 120, 149}, {5, 6}, {2}, {0, 5}]
    relevant.append(set(range(20, 130)))
    evaluator = InformationRetrievalEvaluator(
        queries={str(q): "q" for q in range(len(ranked))},
        corpus={str(c): "c" for c in range(150)},
        relevant_docs={str(q): {str(c) for c in rel} for q, rel in enumerate(relevant)},
    )
    results = [[{"corpus_id": str(c), "score": -r} for r, c in enumerate(ids)] for ids in ranked]
    theirs = evaluator.compute_metrics(results)
    ours = ranking_metrics(ranked, relevant)
    compared = 0
    for group, values in theirs.items():  # {"ndcg@k": {10: value}, ...}
        for k, value in values.items():
            assert ours[group.replace("k", str(k))] == pytest.approx(value, abs=1e-12), (group, k)
            compared += 1
    assert compared == 15


def test_equal_scores_rank_by_corpus_id(tiny, one_thread):
    # Corpus 0 and 1 are the same text: id 0 ranks first, so the relevant 1 is second.
    data = RetrievalSet(["a cat"], ["a dog", "a dog", "rain falls"], [{1}])
    metrics = evaluate_retrieval(SentenceBert.from_pretrained(tiny), data)
    assert (metrics["accuracy@1"], metrics["mrr@10"]) == (0.0, 0.5)
    # Twelve equal texts after another: the lowest id of them first, whatever order the
    # top-k selection left them in.
    corpus = ["rain falls", *["a dog"] * 12]
    for relevant in range(1, 13):
        data = RetrievalSet(["a cat"], corpus, [{relevant}])
        metrics = evaluate_retrieval(SentenceBert.from_pretrained(tiny), data)
        assert metrics["mrr@10"] == pytest.approx(1 / relevant if relevant <= 10 else 0.0)


@pytest.mark.parametrize(
    "queries, corpus, relevant, words",
    [
        ([], ["a"], [], "at least one query and one corpus text"),
        (["q"], [], [{0}], "at least one query and one corpus text"),
        (["q", "r"], ["a"], [{0}], "1 sets for 2 queries"),
        (["q"], ["a", "b"], [set()], "relevant[0]: query 0 has no relevant text"),
        (["q"], ["a", "b"], [{0, 2}], "relevant[0]: 2 is no corpus id (0 to 1)"),
    ],
)
def test_a_retrieval_set_that_cannot_be_scored_is_refused(queries, corpus, relevant, words):
    with pytest.raises(ConfigError) as info:
        RetrievalSet(queries, corpus, relevant)
    assert words in str(info.value)


def test_the_ranking_is_by_cosine_for_a_model_whose_vectors_are_not_unit_length(tiny, one_thread):
    model = SentenceBert.from_pretrained(tiny)
    words = ["cat", "dog", "rain", "river", "music", "chess", "bread", "snow", "train", "light"]
    corpus = [" ".join(words[i : i + 1 + i % 4]) for i in range(10)] + words
    queries = [f"the {w} and the {v}" for w, v in zip(words, reversed(words), strict=True)]
    relevant = [{i, (3 * i + 7) % len(corpus)} for i in range(len(queries))]
    q, c = model.encode(queries, normalize=True), model.encode(corpus, normalize=True)
    by_cosine = np.argsort(-(q @ c.T), axis=1, kind="stable").tolist()  # ties: lower id first
    metrics = evaluate_retrieval(model, RetrievalSet(queries, corpus, relevant))
    assert metrics == {"queries": 10, "corpus": 20, **ranking_metrics(by_cosine, relevant)}


def test_equals_information_retrieval_evaluator_on_the_real_checkpoint(one_thread):
    full = retrieval_set_from_pairs(f"{SICK}@TRIAL", 4.5)
    data = RetrievalSet(full.queries[:60], full.corpus, full.relevant[:60])
    ours = evaluate_retrieval(SentenceBert.from_pretrained("all-MiniLM-L6-v2"), data)
    evaluator = InformationRetrievalEvaluator(
        queries={str(i): q for i, q in enumerate(data.queries)},
        corpus={str(i): c for i, c in enumerate(data.corpus)},
        relevant_docs={str(i): {str(c) for c in rel} for i, rel in enumerate(data.relevant)},
        write_csv=False,
    )
    theirs = evaluator(SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device="cpu"))
    compared = 0
    for name, value in ours.items():
        if f"cosine_{name}" in theirs:
            assert value == pytest.approx(theirs[f"cosine_{name}"], abs=1e-6), name
            compared += 1
    assert compared == 15  # accuracy, precision, recall @1/3/5/10, mrr@10, ndcg@10, map@100
    assert 0.3 < ours["mrr@10"] < 1.0  # a real, imperfect ranking


def test_evaluate_retrieval_command(tmp_path, capsys, one_thread):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "sentence1,sentence2,score\nA cat sits.,A cat is sitting.,4.8\n"
        "Rain falls.,It is raining.,4.5\nA dog runs.,Stocks fell.,0.2\n"
    )
    assert main(["evaluate-retrieval", "--model", "all-MiniLM-L6-v2", "--data", str(pairs)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["queries"] == 2 and metrics["corpus"] == 3 and metrics["recall@1"] == 1.0
    assert main(["evaluate-retrieval", "--data", str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # From Python: the same file as a path, as the docs show it.
    model = SentenceBert.from_pretrained("all-MiniLM-L6-v2")
    assert evaluate_retrieval(model, pairs) == evaluate_retrieval(model, str(pairs)) == metrics
    with pytest.raises(TypeError, match="data: a RetrievalSet or a pair file, not list"):
        evaluate_retrieval(model, [("a", "b")])
