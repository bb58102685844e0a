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
def minilm_export(tmp_path_factory):
    """all-MiniLM-L6-v2 exported with --quantize int8 (its folder has the fp32 graph too), once
    a session: the export tests and the server's int8 test share it (~30 s to make)."""
    pytest.importorskip("onnxscript")
    from sbert.inference.export import export

    out = tmp_path_factory.mktemp("minilm") / "onnx"
    export("all-MiniLM-L6-v2", out, quantize="int8")
    return out
