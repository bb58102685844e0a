import os

import pytest

# The reference libraries must never reach for a model hub: everything here is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: tiny models run many times faster on a shared 2-core
    machine, and runs compared for exact equality use the same kernels in every process (the
    subprocesses get OMP_NUM_THREADS=1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny randomly initialised model folder (seed 0), once a session, for the tests that
    only read it."""
    import torch

    from sbert import SentenceBert

    path = tmp_path_factory.mktemp("models") / "tiny"
    torch.manual_seed(0)
    SentenceBert.from_config("tiny").save(path)
    return path


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory):
    """all-MiniLM-L6-v2 exported with --quantize int8 (its folder has the fp32 graph too), once
    a session: the export tests and the server's int8 test share it (~30 s to make)."""
    pytest.importorskip("onnxscript")
    from sbert.inference.export import export

    out = tmp_path_factory.mktemp("minilm") / "onnx"
    export("all-MiniLM-L6-v2", out, quantize="int8")
    return out


# The files that take the suite's minutes: training runs, exports, parity on the real
# checkpoint, real subprocesses. `python -m pytest -m "not slow"` leaves them out (README).
SLOW = {
    "test_trainer.py", "test_reliability.py", "test_distributed.py", "test_workflows.py",
    "test_damaged_folders.py", "test_messages.py", "test_encode.py", "test_pretrained.py",
    "test_export.py", "test_export_use.py", "test_index.py", "test_index_safety.py",
    "test_predict.py", "test_retrieval.py", "test_load.py", "test_runtimes.py", "test_server.py",
    "test_embed.py", "test_embed_ray.py", "test_stores.py",
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW:
            item.add_marker(pytest.mark.slow)
