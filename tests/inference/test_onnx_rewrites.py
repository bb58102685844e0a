"""The rewrites of torch.onnx's attention (sbert/inference/onnx_rewrites.py) on small graphs
built as the exporter writes them: the same values after, and nothing rewritten that only looks
alike. (The export's own graph: tests/inference/test_export.py, at parity with PyTorch.)"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sbert.inference.onnx_rewrites import drop_unused, transpose_keys_directly  # noqa: E402

BIG = np.iinfo(np.int64).max
# Slices of Shape(keys) as (start, end): torch.onnx's swap of the last two axes of a 4-D tensor.
SWAP = {"first": [(-2, -1), (-1, BIG)], "last": [(-BIG - 1, -2), (-1, BIG), (-2, -1)]}


def keys_graph(first, last):
    """keys (b, 2, 3, 4) -> Reshape(-1, ...first) -> Transpose(0, 2, 1) -> Reshape(...last)."""
    nodes = [helper.make_node("Shape", ["keys"], ["shape"])]
    weights = [numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    names = {}
    for group, bounds in (("first", first), ("last", last)):
        names[group] = []
        for i, (start, end) in enumerate(bounds):
            name = f"{group}{i}"
            weights += [
                numpy_helper.from_array(np.array([start], np.int64), f"{name}_start"),
                numpy_helper.from_array(np.array([end], np.int64), f"{name}_end"),
            ]
            nodes.append(
                helper.make_node("Slice", ["shape", f"{name}_start", f"{name}_end"], [name])
            )
            names[group].append(name)
    nodes += [
        helper.make_node("Concat", ["minus_one", *names["first"]], ["squeezed"], axis=0),
        helper.make_node("Reshape", ["keys", "squeezed"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["flat_t"], perm=[0, 2, 1]),
        helper.make_node("Concat", names["last"], ["unsqueezed"], axis=0),
        helper.make_node("Reshape", ["flat_t", "unsqueezed"], ["out"]),
    ]
    keys = helper.make_tensor_value_info("keys", TensorProto.FLOAT, ["b", 2, 3, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "keys", [keys], [out], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model, keys):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"keys": keys})[0]


def test_the_keys_swap_becomes_one_transpose_with_the_same_values():
    model = keys_graph(SWAP["first"], SWAP["last"])
    keys = np.random.default_rng(0).standard_normal((5, 2, 3, 4)).astype(np.float32)
    before = run(model, keys)
    transpose_keys_directly(model.graph)
    drop_unused(model.graph)
    assert [(n.op_type, list(n.attribute[0].ints)) for n in model.graph.node] == [
        ("Transpose", [0, 1, 3, 2])
    ]
    assert not model.graph.initializer  # the shape constants went with their Slices
    np.testing.assert_array_equal(run(model, keys), before)
    np.testing.assert_array_equal(before, keys.transpose(0, 1, 3, 2))


@pytest.mark.parametrize(
    "first, last",
    [
        (SWAP["first"], [(-BIG - 1, -2), (-2, -1), (-1, BIG)]),  # reshaped back unswapped
        ([(-1, BIG), (-2, -1)], SWAP["last"]),  # grouped in the other order first
        ([(-3, -2), (-1, BIG)], SWAP["last"]),  # another axis
    ],
)
def test_what_only_looks_like_the_keys_swap_is_left_alone(first, last):
    model = keys_graph(first, last)
    nodes = [n.SerializeToString() for n in model.graph.node]
    transpose_keys_directly(model.graph)
    assert [n.SerializeToString() for n in model.graph.node] == nodes
