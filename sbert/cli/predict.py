"""label and score sentence pairs with a trained model (both heads)

Two sentences: a short answer. --input FILE: one JSON object per pair, in input order,
{"line", "label", "probabilities", "similarity", "score"}, into --output FILE.jsonl or, without
it, onto stdout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sbert.cli.common import DEVICE_HELP, MODEL_HELP, PAIR, device_for, on_terminal, write_lines
from sbert.options import option


@dataclass
class Options:
    model: str | None = option(MODEL_HELP + " (with its classifier, if any)", required=True)
    first: str | None = option("first sentence", positional=True)
    second: str | None = option("second sentence", positional=True)
    input: str | None = option(
        "pairs: a two-column TSV, or any data `sbert train` reads, PATH[@SPLIT][[FROM:TO]]"
        "[:COLUMNS]"
    )
    output: str | None = option("where to write the predictions (JSON lines; default: stdout)")
    columns: dict[str, str] | None = option(
        "with --input: which of its columns hold what, a=COL,b=COL (for names the readers do "
        "not know)"
    )
    batch_size: int = option(
        "sentences per batch (each distinct sentence is encoded once)", 32, minimum=1
    )
    device: str | None = option(DEVICE_HELP)


def run(o: Options) -> None:
    import json

    from sbert.data.readers import check_sentences
    from sbert.data.specs import parse_spec
    from sbert.errors import ConfigError
    from sbert.fileio import check_output_file
    from sbert.inference.load import load
    from sbert.inference.predict import predict, read_input

    one = o.first is not None or o.second is not None
    if one == (o.input is not None) or (one and None in (o.first, o.second)):
        raise ConfigError("give two sentences, or --input FILE (with --output FILE, or stdout)")
    if o.input is None and (o.output is not None or o.columns):
        raise ConfigError("--output and --columns go with --input")
    if one:
        pairs = [tuple(check_sentences([o.first, o.second], PAIR))]
    else:
        pairs = read_input(o.input, o.columns)
        if o.output is not None:
            check_output_file(o.output, [parse_spec(o.input).path, o.model])
    model = load(o.model)  # an ONNX export too: its classifier in numpy
    if model.heads.classifier is None:
        print(f"note: {o.model} has no classifier: similarity only", file=sys.stderr)
    device = device_for(model, o.device)
    progress = not one and on_terminal()
    predictions = predict(model, pairs, o.batch_size, device, show_progress_bar=progress)
    if one:
        print(describe(predictions[0], model.heads.score_scale))
        return
    # Each answer names its pair's line: readers skip blank lines (and NLI rows without a label).
    lines = [
        json.dumps({"line": pair.line, **p.to_json()}, ensure_ascii=False, allow_nan=False) + "\n"
        for pair, p in zip(pairs, predictions, strict=True)
    ]
    if o.output is None:
        sys.stdout.writelines(lines)
        return
    write_lines(o.output, lines)
    print(f"wrote {len(predictions)} predictions to {o.output}", file=sys.stderr)


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
