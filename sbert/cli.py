"""The `sbert` command line: train, evaluate and use Sentence-BERT models.

Commands: encode, similarity, export, train, evaluate, predict, index, search,
evaluate-retrieval.

This is the only place that turns exceptions into exit codes: a known problem prints one line
on stderr and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import SbertError

EXIT_BAD_INPUT = 2
PAIR = ("first sentence", "second sentence")  # how errors name a pair given as two arguments


def device_for(encoder, requested: str | None):
    """Where `encoder` runs: torch's device for a PyTorch model; None for an ONNX export, whose
    session runs on the CPU (so a GPU asked for is refused rather than silently not used)."""
    from .onnx_runner import OnnxEncoder

    if isinstance(encoder, OnnxEncoder):
        if requested not in (None, "cpu"):
            raise SbertError(
                f"an ONNX export runs on ONNX Runtime's CPU provider; --device {requested} "
                f"does not apply (leave it out, or use the model folder it was exported from)"
            )
        return None
    from .distributed import pick_device

    return pick_device(requested)


def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from .data import read_sentences
    from .fileio import atomic_write_bytes, check_output_file
    from .onnx_runner import load_encoder

    sentences = read_sentences(args.input)
    output = Path(args.output)
    check_output_file(output, [args.input])  # before encoding, not after
    model = load_encoder(args.model)
    vectors = model.encode(
        sentences,
        batch_size=args.batch_size,
        normalize=args.normalize,
        device=device_for(model, args.device),
        show_progress_bar=len(sentences) > 1000,
    )
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(output, buffer.getvalue())
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {args.output}")


def cmd_similarity(args: argparse.Namespace) -> None:
    from .data import check_sentences
    from .onnx_runner import load_encoder

    first, second = check_sentences([args.first, args.second], PAIR)
    model = load_encoder(args.model)
    u, v = model.encode([first, second], normalize=True, device=device_for(model, args.device))
    print(f"{float(u @ v):.4f}")


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export

    record = export(args.model, args.out, args.quantize)
    print(f"wrote {args.out}: {record['graph']} ({record['dim']}-dim sentence vectors)")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch of 0 would never end)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="embed a file of sentences (one a line) into a .npy array")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("--input", required=True, help="UTF-8 text file, one sentence a line")
    p.add_argument("--output", required=True, help="where to write the float32 [N, H] .npy")
    p.add_argument("--batch-size", type=positive, default=32, help="default 32")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)"
    )
    p.set_defaults(run=cmd_encode)

    p = sub.add_parser("similarity", help="print the cosine similarity of two sentences")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_similarity)

    p = sub.add_parser("export", help="write an ONNX folder that runs without torch")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("--out", required=True, help="the folder to write (replaced if an export)")
    p.add_argument("--quantize", default=None, help="int8: also an int8 graph, used by default")
    p.set_defaults(run=cmd_export)

    from .config import add_config_flags

    p = sub.add_parser(
        "train",
        help="train a multi-task sentence encoder",
        description="Train a sentence encoder on classification and regression objectives at "
        "once (Sentence-BERT, Reimers & Gurevych 2019). Without --train: the demo.",
    )
    add_config_flags(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="print dev metrics of a model as one JSON object")
    p.add_argument("--model", required=True, help="model folder (with its classifier, if any)")
    p.add_argument("--data", required=True, help="data file, PATH[@SPLIT]")
    p.add_argument("--format", default=None, help="sts, sick, nli or csv (default: detected)")
    p.add_argument("--batch-size", type=positive, default=128, help="default 128")
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_evaluate)
    add_predict_parser(sub)
    add_search_parsers(sub)
    add_retrieval_parser(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from .config import config_from_args
    from .train import run

    run(config_from_args(args))


def cmd_evaluate(args: argparse.Namespace) -> None:
    import json

    from . import batching
    from .config import read_spec
    from .distributed import pick_device
    from .evaluate import evaluate
    from .multitask import MultiTaskModel

    data = read_spec(args.data, format=args.format)
    device = pick_device(args.device)
    model = MultiTaskModel.from_pretrained(args.model).to(device)
    index = {name: i for i, name in enumerate(model.labels)} or None
    pairs = batching.tokenize_pairs(data, model.encoder.tokenizer, index)
    print(json.dumps(evaluate(model, pairs, args.batch_size, device)))


# Using a trained model


def add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="label and score sentence pairs with a trained model (both heads)",
        description="Two sentences: a short answer. --input FILE --output FILE.jsonl: one JSON "
        'object per pair, in input order: {"label", "probabilities", "similarity", "score"}.',
    )
    p.add_argument(
        "--model", required=True, help="model folder or ONNX export (with its classifier, if any)"
    )
    p.add_argument("first", nargs="?", help="first sentence")
    p.add_argument("second", nargs="?", help="second sentence")
    p.add_argument("--input", help="pairs: a two-column TSV, or any format `sbert train` reads")
    p.add_argument("--output", help="where to write the predictions (JSON lines)")
    p.add_argument("--batch-size", type=positive, default=32, help="default 32")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda when available)")
    p.set_defaults(run=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    import json

    from .data import check_sentences
    from .errors import ConfigError
    from .fileio import atomic_write_bytes, check_output_file
    from .predict import Predictor, predict, read_input

    one = args.first is not None or args.second is not None
    if one == (args.input is not None) or (one and None in (args.first, args.second)):
        raise ConfigError("give two sentences, or --input FILE with --output FILE")
    if (args.input is None) != (args.output is None):
        raise ConfigError("--input and --output go together")
    if one:
        pairs = [tuple(check_sentences([args.first, args.second], PAIR))]
    else:
        pairs = read_input(args.input)
        check_output_file(args.output, [args.input])
    model = Predictor.load(args.model)  # an ONNX export too: its classifier in numpy
    if model.classifier is None:
        print(f"note: {args.model} has no classifier: similarity only", file=sys.stderr)
    device = device_for(model.encoder, args.device)
    predictions = predict(model, pairs, args.batch_size, device, show_progress_bar=not one)
    if one:
        print(describe(predictions[0], model.score_scale))
        return
    # Each answer names its pair's line: readers skip blank lines (and NLI rows without a label).
    lines = [
        json.dumps({"line": pair.line, **p.to_json()}, ensure_ascii=False) + "\n"
        for pair, p in zip(pairs, predictions, strict=True)
    ]
    atomic_write_bytes(Path(args.output), "".join(lines).encode("utf-8"))
    print(f"wrote {len(lines)} predictions to {args.output}", file=sys.stderr)


def describe(p, scale: tuple[float, float] | None) -> str:
    """A few human-readable lines about one prediction."""
    lines = []
    if p.label is not None:
        ranked = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
        lines.append(f"label:       {p.label} ({p.probabilities[p.label]:.1%})")
        lines.append("             " + ", ".join(f"{k} {v:.1%}" for k, v in ranked))
    lines.append(f"similarity:  {p.similarity:.4f} (cosine)")
    if p.score is not None:
        lines.append(
            f"score:       {p.score:.2f} on the training scale [{scale[0]:g}, {scale[1]:g}]"
        )
    return "\n".join(lines)


def add_search_parsers(sub) -> None:
    from .choices import PRECISIONS

    p = sub.add_parser("index", help="embed a corpus into a search index folder")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument("--corpus", required=True, help="texts: one a line, or a CSV/JSONL column")
    p.add_argument(
        "--column",
        default=None,
        help="the CSV/TSV column or JSONL field holding the texts (default: the "
        "file is one text a line); hit ids are 0-based row numbers",
    )
    p.add_argument("--out", required=True, help="the index folder to write")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="scan quantised vectors, rescore with fp32 (int8: 4x, binary: 32x "
        "less memory scanned)",
    )
    p.add_argument(
        "--approximate",
        action="store_true",
        help="add a FAISS HNSW graph for large corpora (pip install faiss-cpu)",
    )
    p.add_argument("--batch-size", type=positive, default=64, help="default 64")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=8192,
        help="texts per resumable chunk: a killed run restarts at its chunk (default 8192)",
    )
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_index)

    p = sub.add_parser("search", help="the top-k texts of an index for queries")
    p.add_argument("--index", required=True, help="an index folder from `sbert index`")
    p.add_argument("query", nargs="?", help="one query (or --queries FILE)")
    p.add_argument("--queries", help="a file of queries, one a line")
    p.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="approximate index only: the HNSW search beam (default 128); wider finds more "
        "of the true neighbours, slower",
    )
    p.add_argument("--output", help="with --queries: write JSON lines here")
    p.add_argument(
        "--model",
        default=None,
        help="the model to encode queries (default: the one the index records; "
        "another model is refused)",
    )
    p.set_defaults(run=cmd_search)


def cmd_index(args: argparse.Namespace) -> None:
    import shutil

    from .data import read_column, read_sentences
    from .errors import ConfigError
    from .fileio import check_output_dir
    from .onnx_runner import load_encoder
    from .search import Index, is_index

    if args.chunk_size < 1 or args.batch_size < 1:
        raise ConfigError("--chunk-size and --batch-size must be positive")
    out = Path(args.out)
    check_output_dir(out, is_index, "an index")
    corpus = Path(args.corpus)
    texts = read_column(corpus, args.column) if args.column else read_sentences(corpus)
    model = load_encoder(args.model)
    name = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    work = out.parent / f".{out.name}.partial"
    index = Index.build(
        model,
        texts,
        name=name,
        precision=args.precision,
        approximate=args.approximate,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        work_dir=work,
        device=device_for(model, args.device),
        show_progress_bar=True,
        corpus={"path": str(corpus.resolve()), "column": args.column},
    )
    index.save(out)
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"indexed {len(index)} texts ({index.precision}"
        f"{', approximate' if index.approximate else ''}) into {out}"
    )


def cmd_search(args: argparse.Namespace) -> None:
    import dataclasses
    import json

    from .data import check_sentences, read_sentences
    from .errors import ConfigError
    from .fileio import atomic_write_bytes, check_output_file
    from .onnx_runner import load_encoder
    from .search import Index

    if (args.query is None) == (args.queries is None):
        raise ConfigError("give one query, or --queries FILE")
    if args.output is not None and args.queries is None:
        raise ConfigError("--output goes with --queries")
    if args.k < 1:
        raise ConfigError(f"-k must be at least 1, got {args.k}")
    if args.query is not None:
        queries = check_sentences([args.query], ["query"])
    else:
        queries = read_sentences(args.queries)
    if args.output is not None:
        check_output_file(args.output, [args.queries, args.index])
    model = load_encoder(args.model) if args.model else None
    index = Index.load(args.index, model)
    results = index.search(queries, args.k, ef_search=args.ef_search)
    if args.output is None:
        for query, hits in zip(queries, results, strict=True):
            if len(queries) > 1:
                print(f"# {query}")
            for rank, hit in enumerate(hits, 1):
                print(f"{rank:3d}  {hit.score:.4f}  {hit.text}  [id {hit.id}]")
        return
    lines = [
        json.dumps({"query": q, "hits": [dataclasses.asdict(h) for h in hits]}, ensure_ascii=False)
        + "\n"
        for q, hits in zip(queries, results, strict=True)
    ]
    atomic_write_bytes(Path(args.output), "".join(lines).encode("utf-8"))
    print(
        f"wrote the top {args.k} hits of {len(queries)} queries to {args.output}", file=sys.stderr
    )


def add_retrieval_parser(sub) -> None:
    from .config import REPO_DATA

    p = sub.add_parser(
        "evaluate-retrieval",
        help="retrieval metrics (MRR@10, NDCG@10, recall@k...) of a model as one JSON object",
        description="Queries, relevant texts and corpus come from a scored pair file: pairs "
        "scoring >= --min-score give query -> relevant text; all second sentences are the corpus.",
    )
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model folder or packaged name")
    p.add_argument(
        "--data",
        default=str(REPO_DATA / "stsbenchmark" / "sts-dev.csv"),
        help="scored pair file, PATH[@SPLIT] (default: STS-B dev)",
    )
    p.add_argument("--min-score", type=float, default=4.0, help="relevance threshold (default 4)")
    p.add_argument("--batch-size", type=positive, default=32, help="default 32")
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_evaluate_retrieval)


def cmd_evaluate_retrieval(args: argparse.Namespace) -> None:
    import json

    from .config import parse_spec
    from .onnx_runner import load_encoder
    from .retrieval import evaluate_retrieval, retrieval_set_from_pairs

    spec = parse_spec(args.data)
    data = retrieval_set_from_pairs(spec.path, args.min_score, spec.split)
    model = load_encoder(args.model)
    metrics = evaluate_retrieval(model, data, args.batch_size, device_for(model, args.device))
    json.dump(metrics, sys.stdout)
    print()


def one_line(error: Exception) -> str:
    """The message on one line: some causes we quote (torch's) span several."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SbertError as e:
        print(f"sbert {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a full disk, a missing output folder: say so, no traceback
        print(f"sbert {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as e:  # e.g. a serving machine without one of its packages
        package = (e.name or "?").split(".")[0]
        print(
            f"sbert {args.command}: error: needs the Python package {package!r}, which is not "
            f"installed (pip install -r requirements.txt; to run an export without torch: "
            f"requirements-serve.txt)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"sbert {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
