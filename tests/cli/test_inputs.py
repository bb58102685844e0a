"""The command line refuses what would lose data or train garbage, in one line and before any
work: an output that is someone else's folder, a file, or the command's own input; settings
that make a model of NaNs; empty sentences given as arguments; data ranges past a file's end.
What reading leaves out (NLI rows without a gold label) or changes (control characters) is
said on stderr, and written files follow the user's umask.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbert import cli

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_TRAIN = ROOT / "data" / "stsbenchmark" / "sts-train.csv"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain"] * 20)]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def index(model: Path, corpus: Path, out: Path) -> Path:
    assert (
        cli.main(["index", "--model", str(model), "--corpus", str(corpus), "--out", str(out)]) == 0
    )
    return out


def error_of(capsys, *args: str) -> str:
    """`sbert ARGS` in this process must fail with exit code 2 and one line on stderr."""
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


# --- outputs ---------------------------------------------------------------------------------


def test_index_never_replaces_a_model_folder_or_a_file(tiny, corpus, tmp_path):
    """A reviewer's `sbert index --out MODEL` deleted the model: now refused, in a real process."""
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "important.txt").write_text("mine")
    for out in (tiny, keep, corpus):
        before = snapshot(out) if out.is_dir() else out.read_bytes()
        args = ["index", "--model", tiny, "--corpus", corpus, "--out", out]
        command = [sys.executable, "-m", "sbert", *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert str(out) in result.stderr
        assert (snapshot(out) if out.is_dir() else out.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "notes"]  # no litter


def test_index_replaces_an_earlier_index(tiny, corpus, tmp_path, capsys):
    out = tmp_path / "index"
    assert (
        cli.main(["index", "--model", str(tiny), "--corpus", str(corpus), "--out", str(out)]) == 0
    )
    (corpus).write_text("\n".join(TEXTS[:7]) + "\n", encoding="utf-8")
    assert (
        cli.main(["index", "--model", str(tiny), "--corpus", str(corpus), "--out", str(out)]) == 0
    )
    assert len((out / "texts.jsonl").read_text().splitlines()) == 7


def test_an_output_that_is_an_input_or_a_folder_is_refused(tiny, corpus, tmp_path, capsys):
    before = corpus.read_bytes()
    line = error_of(capsys, "encode", "--model", tiny, "--input", corpus, "--output", corpus)
    assert "is also an input" in line and str(corpus) in line
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a cat sits\ta dog runs\n", encoding="utf-8")
    line = error_of(capsys, "predict", "--model", tiny, "--input", pairs, "--output", pairs)
    assert "is also an input" in line
    assert corpus.read_bytes() == before and pairs.read_text() == "a cat sits\ta dog runs\n"
    line = error_of(capsys, "encode", "--model", tiny, "--input", corpus, "--output", tmp_path)
    assert "is a folder" in line and str(tmp_path) in line and ".tmp" not in line


def test_an_output_inside_a_packaged_model_is_refused(corpus):
    """A packaged model is named, not given as a path: its installed folder is still an input
    (checked without writing: on failure this would overwrite the installed tokenizer)."""
    from sbert.errors import ConfigError
    from sbert.fileio import check_output_file
    from sbert.folders import resolve

    vocab = resolve("all-MiniLM-L6-v2") / "vocab.txt"
    with pytest.raises(ConfigError, match="an input of this command: not written there"):
        check_output_file(vocab, [corpus, "all-MiniLM-L6-v2"])


@pytest.mark.parametrize("n", [2, 5000], ids=["buffered-until-exit", "written-while-running"])
def test_a_reader_that_leaves_ends_the_command_quietly(tiny, tmp_path, n):
    """`sbert predict ... | head -1`: the pipe's reader leaves; exit 141 as for SIGPIPE, and no
    error line (nothing was wrong with the input), whether the output is written while the
    command runs or, short and block-buffered, only at its end."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"a cat {i}\ta dog {i}\n" for i in range(n)), encoding="utf-8")
    command = [sys.executable, "-m", "sbert", "predict", "--model", tiny, "--input", pairs]
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               cwd=ROOT)  # fmt: skip
    process.stdout.close()  # the reader leaves before the first line
    assert process.wait(timeout=120) == 141
    err = process.stderr.read()
    assert b"error" not in err and b"Exception ignored" not in err, err


def test_predict_reads_a_table_without_labels_or_scores(tiny, tmp_path, capsys):
    """Pairs to predict on have no targets: a known header without them is read."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2\na cat sits,a dog runs\nit rains,it pours\n")
    assert cli.main(["predict", "--model", str(tiny), "--input", str(pairs)]) == 0
    assert [line[:11] for line in capsys.readouterr().out.splitlines()] == [
        '{"line": 2,',
        '{"line": 3,',
    ]


def test_predict_reads_a_data_spec(tiny, tmp_path, capsys):
    """--input takes what `sbert train --train` takes: a split and a range of SICK here."""
    spec = f"{SICK}@TRIAL[0:2]"
    assert cli.main(["predict", "--model", str(tiny), "--input", spec]) == 0
    assert [json.loads(x)["line"] for x in capsys.readouterr().out.splitlines()] == [5, 11]
    plain = tmp_path / "plain.tsv"  # no header: a range applies to it too
    plain.write_text("a cat\ta dog\nrain\tsun\nx y\ty x\n")
    assert cli.main(["predict", "--model", str(tiny), "--input", f"{plain}[1:3]"]) == 0
    assert [json.loads(x)["line"] for x in capsys.readouterr().out.splitlines()] == [2, 3]
    assert "asks for pairs up to 9" in error_of(capsys, "predict", "--model", tiny, "--input",
                                                f"{plain}[5:9]")  # fmt: skip
    line = error_of(capsys, "predict", "--model", tiny, "--input", f"{plain}:regression")
    assert "names a training objective" in line


def test_what_a_command_misses_is_named_as_the_user_gives_it(tiny, corpus, capsys):
    line = error_of(capsys, "similarity", "--model", tiny, "only one")  # a positional: no flag
    assert "argument second (the second sentence) is required" in line
    assert "no model named" in error_of(capsys, "similarity", "--model", "", "a", "b")
    if Path("/dev/full").exists():  # a full device: the error names where it wrote
        args = ["encode", "--model", tiny, "--input", corpus, "--output", "/dev/full"]
        assert "/dev/full" in error_of(capsys, *args)


def test_search_output_may_not_be_its_queries(tiny, corpus, tmp_path, capsys):
    index = tmp_path / "index"
    assert (
        cli.main(["index", "--model", str(tiny), "--corpus", str(corpus), "--out", str(index)]) == 0
    )
    args = ["search", "--index", index, "--queries", corpus, "--output", corpus]
    assert "is also an input" in error_of(capsys, *args)


def test_an_output_inside_an_input_folder_is_refused(tiny, corpus, tmp_path, capsys):
    """--output into the model or index a command reads would damage it (the tokenizer, the
    index's texts), even as a new file."""
    index = tmp_path / "index"
    assert (
        cli.main(["index", "--model", str(tiny), "--corpus", str(corpus), "--out", str(index)]) == 0
    )
    beside = shutil.copytree(tiny, tmp_path / "model")  # an index follows a model beside it
    assert cli.main(["index", "--model", str(beside), "--corpus", str(corpus), "--out",
                     str(tmp_path / "index2")]) == 0  # fmt: skip
    before = snapshot(index), snapshot(tiny)
    line = error_of(capsys, "search", "--index", tmp_path / "index2", "--queries", corpus,
                    "--output", beside / "vocab.txt")  # fmt: skip
    assert "an input of this command: not written there" in line  # the model it recorded
    for args in (
        ["search", "--index", index, "--queries", corpus, "--output", index / "texts.jsonl"],
        [
            "search",
            "--index",
            index,
            "--model",
            tiny,
            "--queries",
            corpus,
            "--output",
            tiny / "vocab.txt",
        ],
        ["encode", "--model", tiny, "--input", corpus, "--output", tiny / "tokenizer.json"],
        ["encode", "--model", tiny, "--input", corpus, "--output", tiny / "new.npy"],
    ):
        line = error_of(capsys, *args)
        assert "an input of this command: not written there" in line
    assert (snapshot(index), snapshot(tiny)) == before


def test_an_earlier_output_holding_more_than_its_own_files_is_left_alone(
    tiny, corpus, tmp_path, capsys
):
    """Rebuilding an index, an embedding folder or an export replaced the whole folder, and with
    it what had been put there since (the model and corpus it was built from); a folder with
    only an `index.json` of someone else's counted as an index."""
    index_ = index(tiny, corpus, tmp_path / "index")
    shutil.copytree(tiny, index_ / "model")
    assert cli.main(["embed", "--model", str(tiny), "--corpus", str(corpus),
                     "--out", str(tmp_path / "vectors")]) == 0  # fmt: skip
    (tmp_path / "vectors" / "corpus.txt").write_text(corpus.read_text())
    assert cli.main(["export", "--model", str(tiny), "--out", str(tmp_path / "onnx")]) == 0
    (tmp_path / "onnx" / "notes.txt").write_text("mine")
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.json").write_text('{"pages": [1]}')
    (web / "notes.txt").write_text("mine")
    cases = [
        (["index", "--model", index_ / "model", "--corpus", corpus, "--out", index_],
         "model/1_Pooling/config.json is none of its files"),
        (["embed", "--model", tiny, "--corpus", tmp_path / "vectors" / "corpus.txt", "--out",
          tmp_path / "vectors"], "corpus.txt is none of its files"),
        (["export", "--model", tiny, "--out", tmp_path / "onnx"], "notes.txt is none of its files"),
        (["index", "--model", tiny, "--corpus", corpus, "--out", web], "no manifest.json"),
    ]  # fmt: skip
    for args, why in cases:
        before = snapshot(args[-1])
        line = error_of(capsys, *args)
        assert f"{args[-1]}: output folder is not only" in line and why in line, line
        assert snapshot(args[-1]) == before


def test_the_python_api_never_replaces_a_folder_of_someone_elses(tiny, tmp_path):
    import sbert
    from sbert.errors import CheckpointError
    from sbert.inference.embed import embed_corpus

    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "ch1.tex").write_text("draft")
    with pytest.raises(CheckpointError, match="is not an embedding folder: left as it is"):
        embed_corpus(sbert.load(tiny), ["a cat", "a dog"], thesis)
    assert os.listdir(thesis) == ["ch1.tex"]


def test_encode_normalizes_when_asked(tiny, corpus, tmp_path):
    for flags, name in (([], "raw.npy"), (["--normalize"], "unit.npy")):
        out = ["--output", str(tmp_path / name)]
        assert cli.main(["encode", "--model", str(tiny), "--input", str(corpus), *out, *flags]) == 0
    raw, unit = np.load(tmp_path / "raw.npy"), np.load(tmp_path / "unit.npy")
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1, atol=1e-2)  # the tiny model's vectors are not unit length
    np.testing.assert_allclose(unit, raw / norms, atol=1e-6)


@pytest.mark.parametrize("source", ["corpus", "vectors"])
@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_index_is_built_at_the_precision_asked_for(tiny, corpus, tmp_path, capsys, source,
                                                   precision):  # fmt: skip
    given = ["--corpus", str(corpus)]
    if source == "vectors":
        vectors = ["embed", "--model", str(tiny), "--corpus", str(corpus), "--out"]
        assert cli.main([*vectors, str(tmp_path / "vectors")]) == 0
        given = ["--vectors", str(tmp_path / "vectors")]
    out = tmp_path / "ix"
    build = ["index", "--model", str(tiny), *given, "--out", str(out), "--precision", precision]
    assert cli.main(build) == 0
    assert f"({precision})" in capsys.readouterr().out
    assert json.loads((out / "index.json").read_text())["precision"] == precision
    assert (out / "codes.npy").is_file()


def test_written_files_and_folders_follow_the_umask(tiny, corpus, tmp_path, capsys):
    old = os.umask(0o027)  # not the usual 022, so that modes written as 644/755 fail
    try:
        assert cli.main(["encode", "--model", str(tiny), "--input", str(corpus),
                         "--output", str(tmp_path / "v.npy")]) == 0  # fmt: skip
        index(tiny, corpus, tmp_path / "ix")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "v.npy").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "ix").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "ix" / "vectors.npy").stat().st_mode) == 0o640


# --- training ------------------------------------------------------------------------------


def train(out: Path, *extra: str) -> list[str]:
    flags = "--model tiny --limit 16 --batch-size 8 --device cpu --no-eval --max-steps 1"
    return ["train", "--train", f"{SICK}@TRAIN", "--out", out, *flags.split(), *extra]


def test_train_never_writes_into_a_folder_that_is_not_a_run(tiny, tmp_path, capsys):
    before = snapshot(tiny)
    line = error_of(capsys, *train(tiny))
    assert "is not a training run's output" in line and str(tiny) in line
    assert snapshot(tiny) == before


def test_a_folder_with_a_users_log_or_a_final_that_is_no_model_is_refused_before_training(
    tmp_path, capsys
):
    """A file named metrics.jsonl is not a run's log unless it starts with a run's settings
    (the user's was replaced); a final/ that is no model was found only after training."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"my": "log"}\n')
    assert "is not a training run's output" in error_of(capsys, *train(mine))
    assert (mine / "metrics.jsonl").read_text() == '{"my": "log"}\n'
    run = tmp_path / "run"
    assert cli.main([str(a) for a in train(run)]) == 0
    (run / "final" / "config.json").unlink()
    line = error_of(capsys, *train(run))
    assert f"{run / 'final'}: output folder exists and is not a model folder" in line
    assert "settings" in (run / "metrics.jsonl").read_text()  # not begun again


def test_training_data_and_dev_sets_that_give_nothing_are_refused(tmp_path, capsys):
    qa = tmp_path / "qa.csv"
    qa.write_text("question,answer,sim\nA cat,A dog,0.5\nA man,A woman,0.2\n")
    line = error_of(capsys, *train(tmp_path / "r"), "--train", f"{qa}:a=question,b=answer")
    assert "no labels and no scores: nothing to train them on" in line  # a traceback mid-run
    same = tmp_path / "sub"
    same.mkdir()
    sts = tmp_path / "dev.csv"
    sts.write_text("sentence1,sentence2,score\nA cat,A dog,0.5\nA man,A woman,0.2\n")
    (same / "dev.csv").write_text(sts.read_text().replace("0.2", "0.9"))
    base = ["train", "--train", STS_TRAIN, "--out", tmp_path / "r", "--model", "tiny"]  # scores
    base += ["--limit", "16", "--batch-size", "8", "--device", "cpu", "--max-steps", "1"]
    line = error_of(capsys, *base, "--dev", sts, "--dev", same / "dev.csv")
    assert "its metrics would be named dev/..., as another dev set's" in line
    nli = tmp_path / "nli.jsonl"
    nli.write_text('{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}\n')
    line = error_of(capsys, *base, "--dev", nli)  # STS-B scores: no classifier to score labels
    assert "gives no metric: its labels need a classifier, and this stage trains none" in line
    (same / "dev.csv").write_text("sentence1,sentence2,score\na,b,0.5\nc,d,0.5\n")
    line = error_of(capsys, *base, "--dev", same / "dev.csv")
    assert "gives no metric: every gold score is 0.5" in line
    assert not (tmp_path / "r").exists()


def test_a_data_file_with_an_at_sign_in_its_name_is_that_file(tmp_path, capsys):
    data = tmp_path / "run@2024.csv"
    data.write_text(STS_TRAIN.read_text(encoding="utf-8"), encoding="utf-8")
    assert cli.main([str(a) for a in train(tmp_path / "r", "--train", data)]) == 0


def test_an_output_folder_given_as_a_link_to_a_folder_to_be_made_is_made(tmp_path, capsys):
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "elsewhere")  # a dangling link: "[Errno 17] File exists"
    assert cli.main([str(a) for a in train(link)]) == 0
    assert (tmp_path / "elsewhere" / "final" / "config.json").is_file() and link.is_symlink()


def test_the_python_api_checks_settings_as_the_command_line_does(tmp_path):
    import sbert
    from sbert.errors import ConfigError

    config = sbert.TrainConfig(model="tiny", train=[str(STS_TRAIN)], out=str(tmp_path / "r"),
                               no_eval=True, epochs=0)  # fmt: skip
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        sbert.train(config)  # trained nothing, and saved the untrained model as final/
    assert not (tmp_path / "r").exists()


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence1,sentence2,score\na,b,7x\n", encoding="utf-8")
    out = tmp_path / "run"
    line = error_of(capsys, *train(out), "--train", bad)
    assert str(bad) in line
    assert not out.exists()  # not even the lock file


@pytest.mark.parametrize(
    "flags, named",
    [
        ("--lr nan", "--lr"),
        ("--lr -1", "--lr"),
        ("--head-lr inf", "--head-lr"),
        ("--max-grad-norm -1", "--max-grad-norm"),
        ("--weight-decay nan", "--weight-decay"),
        ("--warmup 2", "--warmup"),
        ("--loss-weights classification=nan", "--loss-weights"),
        ("--max-seq-length 100000", "--max-seq-length 100000"),
        ("--seed 99999999999999999999999", "--seed must be at most"),
        ("--seed -1", "--seed must be at least 0"),
        ("--device meta", "--device meta: not supported"),
        ("--freeze-layers 99", "--freeze-layers 99: the model has 2 encoder layers"),
    ],
)
def test_settings_that_would_train_garbage_are_refused(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    line = error_of(capsys, *train(out, *flags.split()))
    assert named in line
    assert not out.exists()


def test_config_stages_that_are_not_tables(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("stages = 3\n")
    line = error_of(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert "stages are [[stages]] tables" in line and str(config) in line


def test_a_stage_setting_out_of_range_names_its_stage(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[[stages]]\ntrain = ["{STS_TRAIN}"]\n\n[[stages]]\nbatch_size = 0\n')
    line = error_of(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert "stage 1 ([[stages]] table 2): --batch-size must be at least 1" in line


def test_an_unknown_objective_is_named_not_a_missing_file(tmp_path, capsys):
    line = error_of(capsys, *train(tmp_path / "run"), "--train", f"{STS_TRAIN}:regresion")
    assert "unknown objective 'regresion'" in line
    for split in ("@TRAIN", "@TRAIN[0:16]"):  # was "unknown split 'TRAIN:regresion'"
        line = error_of(capsys, *train(tmp_path / "run"), "--train", f"{SICK}{split}:regresion")
        assert "unknown objective 'regresion'" in line


def test_rows_past_the_end_of_a_file_are_an_error(tmp_path, capsys):
    line = error_of(capsys, *train(tmp_path / "run"), "--train", f"{SICK}@TRIAL[0:1000]")
    assert "asks for pairs up to 1000; there are 495 in split TRIAL" in line


# --- sentences and data --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["similarity", "predict", "search"])
def test_an_empty_sentence_argument_is_refused(tiny, corpus, tmp_path, capsys, command):
    if command == "search":
        built = index(tiny, corpus, tmp_path / "index")
        line = error_of(capsys, "search", "--index", built, "")  # was "None: not a valid path"
        assert "is empty" in line and "command line" in line
        args = ["search", "--index", built, "  "]
    else:
        args = [command, "--model", tiny, "a cat sits", " \t"]
    line = error_of(capsys, *args)
    assert "is empty" in line and "command line" in line


def test_a_quoted_text_may_span_lines_in_a_corpus_as_in_training_data(tmp_path):
    from sbert.data.readers import read_column

    path = tmp_path / "passages.csv"
    path.write_text('id,text\n1,"hello\nworld"\n\n2,second\n', encoding="utf-8")
    assert read_column(path, "text") == ["hello world", "second"]  # was "bad CSV row"


def test_a_column_reader_refuses_what_csv_would_mangle(tiny, tmp_path, capsys):
    """A header field past csv's size limit, a stray quote that csv would silently merge, a
    header naming the text column twice (the first was taken without a word)."""
    for name, text, words in (
        ("huge.csv", "text," + "x" * 200_000 + "\na cat,1\n", "huge.csv:1: malformed CSV"),
        ("quote.csv", 'text,n\n"abc"def,x\n', "quote.csv:2: malformed CSV"),
        ("twice.csv", "text,text\nhi,there\n", "twice.csv:1: the header names 'text' twice"),
    ):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        out = tmp_path / f"index-{name}"
        args = ["index", "--model", tiny, "--corpus", path, "--column", "text", "--out", out]
        assert words in error_of(capsys, *args)
        assert not out.exists()


def test_a_folder_where_a_small_file_belongs_is_named(tiny, tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    line = error_of(capsys, "similarity", "--model", tiny, "a", "b", "--config", folder)
    assert line.endswith(f"{folder}: is a folder, not a regular file"), line


def test_skipped_and_repaired_rows_are_said(tmp_path, capsys):
    from sbert.data.readers import read_pairs

    nli = tmp_path / "nli.jsonl"
    rows = ['{"sentence1": "a", "sentence2": "b", "gold_label": "entailment"}',
            '{"sentence1": "c", "sentence2": "d", "gold_label": "-"}']  # fmt: skip
    nli.write_text("\n".join(rows) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert read_pairs(nli).skipped == 1
    assert f"note: {nli}: 1 rows with gold_label '-' skipped" in capsys.readouterr().err
    assert read_pairs(STS_TRAIN).repaired >= 1  # line 2919's U+0012
    assert "had control characters replaced by spaces" in capsys.readouterr().err
