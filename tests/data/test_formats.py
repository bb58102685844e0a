"""A user's own data, in the layouts of the ecosystem: Hugging Face NLI tables
(premise, hypothesis, label 0/1/2/-1), scores named `similarity`, sentence-transformers'
(anchor, positive[, negative]), JSON lines and Parquet tables, a column mapping for any other
names, and a corpus to index whose header is not a text. What cannot be read says which
layouts can, and how to name the columns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sbert import cli
from sbert.data.readers import LAYOUTS, Pair, read_corpus, read_pairs
from sbert.data.specs import parse_spec, read_spec
from sbert.errors import ConfigError, DataError

HF_NLI = "premise,hypothesis,label\nA man eats.,Someone eats.,0\nA man eats.,He is hungry.,1\n"
HF_NLI += "A man eats.,Nobody eats.,2\nA dog runs.,A cat sleeps.,-1\n"
HF_PAIRS = [
    Pair("A man eats.", "Someone eats.", "entailment", None, 2),
    Pair("A man eats.", "He is hungry.", "neutral", None, 3),
    Pair("A man eats.", "Nobody eats.", "contradiction", None, 4),
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_hugging_face_nli_csv_reads_with_its_numbered_labels(tmp_path, capsys):
    data = read_pairs(write(tmp_path, "nli.csv", HF_NLI))
    assert data.format == "csv" and data.pairs == HF_PAIRS and data.skipped == 1
    assert "1 rows with no gold label ('-', or -1) skipped" in capsys.readouterr().err
    bad = write(tmp_path, "bad.csv", "premise,hypothesis,label\na,b,3\n")
    with pytest.raises(DataError, match="premise/hypothesis files label 0 entailment") as e:
        read_pairs(bad)
    assert e.value.line == 2


def test_numbered_labels_written_as_floats_read_as_their_numbers(tmp_path, capsys):
    """pandas writes an integer column with a missing value as 0.0, 1.0, -1.0: the same labels
    (a -1.0 row was trained as a fourth class, "-1.0")."""
    floats = HF_NLI.replace(",0\n", ",0.0\n").replace(",1\n", ",1.0\n").replace(",-1\n", ",-1.0\n")
    data = read_pairs(write(tmp_path, "nli.csv", floats))
    assert data.pairs == HF_PAIRS and data.skipped == 1
    with pytest.raises(DataError, match="label '1.5': premise/hypothesis files label 0"):
        read_pairs(write(tmp_path, "bad.csv", "premise,hypothesis,label\na,b,1.5\n"))


def test_a_json_lines_text_that_is_no_string_is_named_as_such(tmp_path):
    from sbert.data.readers import read_column

    path = write(tmp_path, "c.jsonl", '{"text": "a cat"}\n{"text": 5}\n{"body": "x"}\n')
    with pytest.raises(DataError, match="text is not a text: '5'") as e:
        read_column(path, "text")  # was "no text field 'text'"
    assert e.value.line == 2


def test_similarity_and_sentence_transformers_names(tmp_path):
    sims = read_pairs(write(tmp_path, "s.csv", "sentence1,sentence2,similarity\na,b,0.5\nc,d,1\n"))
    assert [p.score for p in sims.pairs] == [0.5, 1.0] and sims.score_range == (0, 1)
    triplets = read_pairs(write(tmp_path, "t.csv", "anchor,positive,negative\nq1,p1,n1\nq2,p2,\n"))
    assert triplets.pairs == [
        Pair("q1", "p1", "entailment", None, 2),
        Pair("q1", "n1", "contradiction", None, 2),
        Pair("q2", "p2", "entailment", None, 3),
    ]
    pairs = read_pairs(write(tmp_path, "p.tsv", "anchor\tpositive\nq1\tp1\n"))
    assert pairs.pairs == [Pair("q1", "p1", "entailment", None, 2)]


def test_json_lines_tables(tmp_path):
    rows = [
        {"premise": "A man eats.", "hypothesis": "Someone eats.", "label": 0, "idx": 7},
        {"premise": "A man eats.", "hypothesis": "He is hungry.", "label": 1, "idx": 8},
    ]
    data = read_pairs(write(tmp_path, "nli.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    assert data.format == "jsonl" and [p.label for p in data.pairs] == ["entailment", "neutral"]
    scored = write(tmp_path, "s.jsonl", json.dumps({"sentence1": "a", "sentence2": "b",
                                                     "score": 4.5}) + "\n")  # fmt: skip
    assert read_pairs(scored).pairs == [Pair("a", "b", None, 4.5, 1)]
    numbers = write(tmp_path, "n.jsonl", json.dumps({"sentence1": 1, "sentence2": "b",
                                                     "score": 4.5}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=r"n.jsonl:1: sentence1 is not a string$"):
        read_pairs(numbers)  # a number where a text belongs: not the text "1"
    # SNLI's own JSON lines still read as before (gold_label, "-" skipped)
    snli = json.dumps({"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}) + "\n"
    assert read_pairs(write(tmp_path, "snli.jsonl", snli)).format == "nli"


def parquet(tmp_path: Path, name: str, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_tables(tmp_path, monkeypatch):
    path = parquet(tmp_path, "nli.parquet", {
        "premise": ["A man eats.", "A man eats.", "A dog runs."],
        "hypothesis": ["Someone eats.", "Nobody eats.", "A cat sleeps."],
        "label": [0, 2, -1],
    })  # fmt: skip
    data = read_pairs(path)
    assert data.format == "parquet" and data.skipped == 1
    assert [(p.b, p.label, p.line) for p in data.pairs] == [
        ("Someone eats.", "entailment", 1), ("Nobody eats.", "contradiction", 2)]  # fmt: skip
    renamed = tmp_path / "renamed.bin"  # told by content, not by name
    renamed.write_bytes(path.read_bytes())
    assert read_pairs(renamed).format == "parquet"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"nli.parquet: a Parquet file: .* pip install pyarrow"):
        read_pairs(path)


def test_a_damaged_parquet_file_is_a_data_error(tmp_path):
    path = parquet(tmp_path, "x.parquet", {"sentence1": ["a"], "sentence2": ["b"], "score": [1.0]})
    data = path.read_bytes()
    path.write_bytes(data[:4] + b"\0" * (len(data) - 8) + data[-4:])
    with pytest.raises(DataError, match="unreadable Parquet file"):
        read_pairs(path)


def test_a_column_mapping_names_any_columns(tmp_path):
    qa = write(tmp_path, "qa.csv", "question,answer,sim,extra\nWhy?,Because.,0.9,x\n")
    want = [Pair("Why?", "Because.", None, 0.9, 2)]
    mapping = {"a": "question", "b": "answer", "score": "sim"}
    assert read_pairs(qa, columns=mapping).pairs == want
    spec = parse_spec(f"{qa}:a=question,b=answer,score=sim:regression")
    assert (spec.path, spec.columns, spec.objective) == (str(qa), mapping, "regression")
    assert read_spec(f"{qa}[0:1]:a=question,b=answer,score=sim").pairs == want
    assert read_pairs(qa, columns={"a": "question", "b": "answer"}).pairs == [
        Pair("Why?", "Because.", None, None, 2)]  # fmt: skip
    with pytest.raises(DataError, match="no column 'sim2' for score=") as e:
        read_pairs(qa, columns={"a": "question", "b": "answer", "score": "sim2"})
    assert e.value.line == 1 and "'question', 'answer', 'sim', 'extra'" in e.value.problem
    with pytest.raises(ConfigError, match="unknown key.*query"):
        read_pairs(qa, columns={"query": "question", "b": "answer"})
    with pytest.raises(ConfigError, match="column mapping applies to CSV/TSV"):
        read_pairs(Path(__file__).parents[2] / "data" / "stsbenchmark" / "sts-dev.csv",
                   format="sts", columns={"a": "x", "b": "y"})  # fmt: skip


def test_the_error_lists_the_layouts_and_the_mapping(tmp_path):
    for names in ("question,answer,sim\nq,a,1\n", "sentence1,sentence2\na,b\n"):
        with pytest.raises(DataError) as e:
            read_pairs(write(tmp_path, "x.csv", names), format="csv")
        assert LAYOUTS in e.value.problem
        for layout in ("premise,hypothesis", "anchor,positive[,negative]", "similarity",
                       "--columns", "a=COL,b=COL"):  # fmt: skip
            assert layout in e.value.problem
    with pytest.raises(DataError, match="unknown format.*premise,hypothesis.*--columns"):
        read_pairs(write(tmp_path, "y.txt", "question\tanswer\nq\ta\n"))


def test_the_commands_take_a_column_mapping(tiny, tmp_path, capsys):
    qa = write(tmp_path, "qa.csv", "question,answer,sim\nWhy?,Because.,0.9\nHow?,Thus.,0.1\n"
                                   "Who?,Me.,0.5\n")  # fmt: skip
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(tiny), "--data", str(qa),
                     "--columns", "a=question,b=answer,score=sim"]) == 0  # fmt: skip
    assert set(json.loads(capsys.readouterr().out)) == {"pairs", "spearman", "pearson"}
    assert cli.main(["predict", "--model", str(tiny), "--input", str(qa),
                     "--columns", "a=question,b=answer"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4]  # JSON lines on stdout without --output
    assert (
        cli.main(
            [
                "evaluate-retrieval",
                "--model",
                str(tiny),
                "--data",
                str(qa),
                "--columns",
                "a=question,b=answer,score=sim",
                "--min-score",
                "0.5",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["queries"] == 2


def test_a_train_spec_takes_a_column_mapping(tmp_path, capsys):
    qa = write(tmp_path, "qa.csv", "question,answer,sim\n" + "".join(
        f"question {i}?,answer {i}.,{i % 5 / 4}\n" for i in range(16)))  # fmt: skip
    args = ["train", "--model", "tiny", "--train", f"{qa}:a=question,b=answer,score=sim",
            "--batch-size", "8", "--max-steps", "1", "--no-eval", "--device", "cpu",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_one_label_is_no_classifier_but_contrastive_positives(tmp_path, capsys):
    pairs = write(tmp_path, "pos.csv", "anchor,positive\n" + "".join(
        f"query {i},passage {i}\n" for i in range(16)))  # fmt: skip
    args = [
        "train",
        "--model",
        "tiny",
        "--train",
        str(pairs),
        "--batch-size",
        "8",
        "--max-steps",
        "1",
        "--no-eval",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "every pair is labelled 'entailment'" in err and "--contrastive" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()
    one_class = write(tmp_path, "one.csv", "sentence1,sentence2,label\n" + "".join(
        f"a {i},b {i},yes\n" for i in range(16)))  # fmt: skip
    assert cli.main([*args[:4], str(one_class), *args[5:]]) == 2
    assert "every pair is labelled 'yes'" in capsys.readouterr().err
    assert cli.main([*args, "--contrastive"]) == 0


# --- a corpus to index -----------------------------------------------------------------------


def test_a_csv_corpus_indexes_its_text_column_not_its_header(tmp_path, capsys):
    one = write(tmp_path, "one.csv", 'text\nfirst text\n"second, with a comma"\n')
    assert read_corpus(one) == (["first text", "second, with a comma"], "text")
    many = write(tmp_path, "many.csv", "id,text,source\n1,first,web\n2,second,book\n")
    capsys.readouterr()
    assert read_corpus(many) == (["first", "second"], "text")
    assert "indexing its column 'text' (--column picks another)" in capsys.readouterr().err
    other = write(tmp_path, "other.tsv", "id\tbody_text\n1\tfirst\n")
    with pytest.raises(DataError, match=r"columns 'id', 'body_text'.*--column NAME"):
        read_corpus(other)
    assert read_corpus(other, "body_text") == (["first"], "body_text")
    jsonl = write(tmp_path, "c.jsonl", json.dumps({"id": 1, "sentence": "first"}) + "\n")
    assert read_corpus(jsonl) == (["first"], "sentence")
    plain = write(tmp_path, "plain.txt", "text\nfirst\n")  # not a table: every line a text
    assert read_corpus(plain) == (["text", "first"], None)
    table = parquet(tmp_path, "c.parquet", {"id": [1, 2], "passage": ["first", "second"]})
    assert read_corpus(table) == (["first", "second"], "passage")


def test_sbert_index_on_a_csv_without_column(tiny, tmp_path, capsys):
    corpus = write(tmp_path, "c.csv", "id,text\n1,a cat sits\n2,a dog runs\n")
    capsys.readouterr()
    assert cli.main(["index", "--model", str(tiny), "--corpus", str(corpus),
                     "--out", str(tmp_path / "ix")]) == 0  # fmt: skip
    texts = (tmp_path / "ix" / "texts.jsonl").read_text().splitlines()
    assert [json.loads(t) for t in texts] == ["a cat sits", "a dog runs"]
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["corpus"]["column"] == "text"


def test_parquet_without_pyarrow_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "pairs.parquet"
    fake.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")  # what detection looks at
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", "x", "--data", str(fake)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"{fake}: a Parquet file" in err and "pip install pyarrow" in err
    )


def test_what_the_ecosystems_files_hold_is_read_not_dropped(tmp_path):
    """NLI JSON lines that also carry a score read as a table (both targets); SemEval-2014's
    SICK files (entailment_judgment) as SICK, on its 1-5 scale; a Hugging Face NLI file mapped
    to its own names reads as unmapped."""
    rows = [{"sentence1": "a", "sentence2": "b", "gold_label": label, "score": score}
            for label, score in (("entailment", 4.5), ("neutral", 1.0))]  # fmt: skip
    scored = read_pairs(write(tmp_path, "n.jsonl", "\n".join(map(json.dumps, rows)) + "\n"))
    assert scored.format == "jsonl" and [(p.label, p.score) for p in scored.pairs] == [
        ("entailment", 4.5), ("neutral", 1.0)
    ]  # fmt: skip
    semeval = write(tmp_path, "SICK_test_annotated.txt",
                    "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    "1\tA man sings.\tA person sings.\t1.0\tENTAILMENT\n"
                    "2\tA dog runs.\tA cat sleeps.\t4.5\tNEUTRAL\n")  # fmt: skip
    sick = read_pairs(semeval)
    assert (sick.format, sick.score_range) == ("sick", (1.0, 5.0))
    assert [(p.label, p.score) for p in sick.pairs] == [("entailment", 1.0), ("neutral", 4.5)]
    hf = write(tmp_path, "nli.csv", HF_NLI)
    mapped = read_pairs(hf, columns={"a": "premise", "b": "hypothesis", "label": "label"})
    assert (mapped.pairs, mapped.skipped) == (HF_PAIRS, 1)


@pytest.mark.parametrize(
    "name, text, line, words",
    [
        # GLUE's STS-B keeps its scores in `label`: not one class per score
        ("glue.csv", "sentence1,sentence2,label\na,b,5.0\nc,d,3.8\n", 3,
         "label '3.8' is a fraction: a label names a class; if label holds similarity scores, "
         "map it as the score (PATH:a=sentence1,b=sentence2,score=label)"),
        ("plus.csv", "premise,hypothesis,label\na,b,+1\n", 2, "premise/hypothesis files label 0"),
        ("exp.csv", "premise,hypothesis,label\na,b,1e0\n", 2, "premise/hypothesis files label 0"),
        ("sep.csv", "sentence1,sentence2,score\na,b,0_5\n", 2, "score '0_5' is not a number"),
        ("ctl.csv", "sentence1,sentence2,label\na,b,x\x07y\n", 2, "contains a control character"),
        ("neg.csv", "anchor,positive,negative,label\na,b,c,x\n", 1,
         "a hard negative column (negative) is read with anchor, positive alone"),
        ("twice.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 4, "score": 0.5}\n', 1,
         "key 'score' given twice"),
        ("late.jsonl", '{"sentence1": "a", "sentence2": "b", "label": "x"}\n'
         '{"sentence1": "c", "sentence2": "d", "label": "y", "score": 3}\n', 2,
         "key 'score' is not in the first object"),
        ("bool.jsonl", '{"sentence1": "a", "sentence2": "b", "label": true}\n', 1,
         "label is not a string or a number"),
    ],
)  # fmt: skip
def test_rows_that_would_be_read_wrongly_are_refused(tmp_path, name, text, line, words):
    with pytest.raises(DataError) as info:
        read_pairs(write(tmp_path, name, text))
    assert (info.value.line, words in info.value.problem) == (line, True), info.value.problem


def test_a_parquet_column_named_twice_is_refused(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    columns = [pa.array(["a"]), pa.array(["b"]), pa.array([4.0]), pa.array([0.5])]
    table = pa.Table.from_arrays(columns, names=["sentence1", "sentence2", "score", "score"])
    pq.write_table(table, tmp_path / "twice.parquet")
    with pytest.raises(DataError, match="column 'score' appears twice"):
        read_pairs(tmp_path / "twice.parquet")


def test_specs_that_name_nothing_or_name_columns_twice(tmp_path):
    csv = write(tmp_path, "ok.csv", "sentence1,sentence2,score\na,b,1\nc,d,2\n")
    with pytest.raises(DataError, match=r"no pairs in ok\[:0\]") as info:
        read_spec(f"{csv}[:0]")
    assert info.value.path == str(csv)
    with pytest.raises(ConfigError, match="a data file path is empty"):
        read_spec("")
    with pytest.raises(ConfigError, match="named twice, in the data spec and by --columns"):
        read_spec(f"{csv}:a=sentence1,b=sentence2", columns={"a": "sentence2", "b": "sentence1"})
    gold = write(tmp_path, "g.jsonl", '{"s": "a", "t": "b", "gold_label": "x"}\n')
    assert read_pairs(gold, columns={"a": "s", "b": "t", "label": "gold_label"}).format == "jsonl"
