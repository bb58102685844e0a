"""The rewrites of torch.onnx's attention (sbert/inference/onnx_rewrites.py) on small graphs
built as the exporter writes them: the same values after, and nothing rewritten that only looks
alike. (The export's own graph: tests/inference/test_export.py, at parity with PyTorch.)"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sbert.inference.onnx_rewrites import (  # noqa: E402
    drop_unused,
    separate_projections,
    transpose_keys_directly,
)

BIG = np.iinfo(np.int64).max
# Slices of Shape(keys) as (start, end): torch.onnx's swap of the last two axes of a 4-D tensor.
SWAP = {"first": [(-2, -1), (-1, BIG)], "last": [(-BIG - 1, -2), (-1, BIG), (-2, -1)]}


def keys_graph(first=SWAP["first"], last=SWAP["last"], shape=("b", 2, 3, 4), reader="Reshape"):
    """keys (b, 2, 3, 4) -> Reshape(-1, ...first) -> Transpose(0, 2, 1) -> Reshape(...last)."""
    nodes = [helper.make_node("Shape", ["keys"], ["shape"], start=0)]  # as torch.onnx does
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
        helper.make_node(
            reader, ["flat_t", "unsqueezed"][: 2 if reader == "Reshape" else 1], ["out"]
        ),
    ]
    keys = helper.make_tensor_value_info("keys", TensorProto.FLOAT, list(shape))
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "keys", [keys], [out], weights)
    return model_of(graph)


def model_of(graph):
    # IR 8 (what opset 18 needs): the onnxruntime that still installs on Python 3.10 reads IR <= 11.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def run(model, keys, name="keys"):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {name: keys})


def projection_graph(
    split_axis=2, parts=3, sizes=None, split_attribute=None, bias_is_input=False,
    bias_shape=(6,), read=None, given=None, recorded=True,
):  # fmt: skip
    """x (b, 3, 4) -> MatMul by a (4, 6) weight -> Add a bias (6) -> Split in `parts` (q, k, v
    of width 2 as our attention's), each part a graph output. Near misses: `read` names a
    tensor a Relu reads too, `given` one the graph gives too; `recorded=False` records no
    shape of the split tensor."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w")]
    bias = helper.make_tensor_value_info("bias", TensorProto.FLOAT, [6])
    if not bias_is_input:
        values = rng.standard_normal(bias_shape).astype(np.float32)
        weights.append(numpy_helper.from_array(values, "bias"))
    split_inputs, how = ["fused"], {"num_outputs": parts}
    if sizes is not None:
        weights.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        split_inputs, how = ["fused", "sizes"], {}
    if split_attribute is not None:  # the form before opset 13
        how = {"split": split_attribute}
    parts_out = [f"part{i}" for i in range(parts)]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["fused"]),
        helper.make_node("Split", split_inputs, parts_out, axis=split_axis, **how),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in parts_out]
    inputs = [x] + ([bias] if bias_is_input else [])
    if read is not None:
        nodes.append(helper.make_node("Relu", [read], ["relu"]))
        outputs.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, None))
    if given is not None:
        outputs.append(helper.make_tensor_value_info(given, TensorProto.FLOAT, None))
    shapes = [helper.make_tensor_value_info("fused", TensorProto.FLOAT, ["b", 3, 6])]
    graph = helper.make_graph(
        nodes, "projection", inputs, outputs, weights, value_info=shapes if recorded else []
    )
    return model_of(graph)


def test_the_keys_swap_becomes_one_transpose_with_the_same_values():
    model = keys_graph()
    keys = np.random.default_rng(0).standard_normal((5, 2, 3, 4)).astype(np.float32)
    before = run(model, keys)
    transpose_keys_directly(model.graph)
    drop_unused(model.graph)
    assert [(n.op_type, list(n.attribute[0].ints)) for n in model.graph.node] == [
        ("Transpose", [0, 1, 3, 2])
    ]
    assert not model.graph.initializer  # the shape constants went with their Slices
    np.testing.assert_array_equal(run(model, keys)[0], before[0])
    np.testing.assert_array_equal(before[0], keys.transpose(0, 1, 3, 2))


@pytest.mark.parametrize(
    "first, last",
    [
        (SWAP["first"], [(-BIG - 1, -2), (-2, -1), (-1, BIG)]),  # reshaped back unswapped
        ([(-1, BIG), (-2, -1)], SWAP["last"]),  # grouped in the other order first
        ([(-3, -2), (-1, BIG)], SWAP["last"]),  # another axis
    ],
)
def test_what_only_looks_like_the_keys_swap_is_left_alone(first, last):
    assert_left_alone(keys_graph(first, last))


def test_keys_of_another_rank_reader_or_shape_are_left_alone():
    assert_left_alone(keys_graph(shape=("b", 3, 4)))  # the swap itself, but of 3-D keys
    assert_left_alone(keys_graph(reader="Relu"))  # the Transpose read by other than a Reshape
    part = keys_graph()
    part.graph.node[0].attribute[0].i = 1  # Shape(keys, start=1): the slices mean other axes
    assert_left_alone(part)


def test_a_constant_of_another_form_is_not_read_as_one():
    """A Constant node holding value_ints (not torch.onnx's form) is left alone, not a crash."""
    model = keys_graph()
    weights = model.graph.initializer
    weights.remove(next(t for t in weights if t.name == "minus_one"))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["minus_one"], value_ints=[-1]))
    assert_left_alone(model)


def assert_left_alone(model, rewrite=transpose_keys_directly):
    nodes = [n.SerializeToString() for n in model.graph.node]
    rewrite(model.graph)
    assert [n.SerializeToString() for n in model.graph.node] == nodes


def same_values_after(model, rewrite):
    x = np.random.default_rng(1).standard_normal((5, 3, 4)).astype(np.float32)
    before = run(model, x, "x")
    rewrite(model.graph)
    drop_unused(model.graph)
    graph = model.graph
    tensors = [t.name for t in graph.initializer] + [name for n in graph.node for name in n.output]
    nodes = [n.name for n in graph.node if n.name]
    assert len(set(tensors)) == len(tensors) and len(set(nodes)) == len(nodes)  # each once
    for got, want in zip(run(model, x, "x"), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis, recorded", [(2, True), (-1, False)])
def test_a_split_projection_becomes_one_matmul_a_part_with_the_same_values(axis, recorded):
    model = projection_graph(split_axis=axis, recorded=recorded)
    same_values_after(model, separate_projections)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"] * 3
    assert [n.output[0] for n in model.graph.node][1::2] == ["part0", "part1", "part2"]
    assert sorted(t.name for t in model.graph.initializer) == [
        "bias_part0", "bias_part1", "bias_part2", "w_part0", "w_part1", "w_part2"
    ]  # fmt: skip


def test_projections_sharing_their_weights_get_parts_of_their_own_names():
    """Two projections of one weight and bias (as weights tied across layers would be): each
    gets its own parts, no name twice (ONNX's checker refuses a model that has one)."""
    model = projection_graph()
    nodes = model.graph.node
    nodes.extend([
        helper.make_node("MatMul", ["x", "w"], ["product2"]),
        helper.make_node("Add", ["product2", "bias"], ["fused2"]),
        helper.make_node("Split", ["fused2"], ["a", "b", "c"], axis=-1, num_outputs=3),
    ])  # fmt: skip
    model.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "abc"
    )
    same_values_after(model, separate_projections)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"] * 6
    assert len({t.name for t in model.graph.initializer}) == 12


@pytest.mark.parametrize(
    "graph",
    [
        dict(split_axis=1),  # split along the tokens, not the features
        dict(split_axis=2, recorded=False),  # an axis that may not be the last
        dict(sizes=[2, 2, 2]),  # sizes given as an input
        dict(parts=2, split_attribute=[1, 5]),  # or, before opset 13, as an attribute
        dict(parts=4),  # 6 columns do not split in 4 equal parts
        dict(bias_is_input=True),  # the bias is not a constant
        dict(bias_shape=(1, 1, 6)),  # nor a vector
        dict(read="fused"),  # the fused product is read by another node too
        dict(read="product"),  # or the product before its bias
        dict(given="fused"),  # or is one of the graph's outputs
        dict(given="product"),
    ],
)
def test_what_only_looks_like_a_split_projection_is_left_alone(graph):
    assert_left_alone(projection_graph(**graph), separate_projections)


def test_a_graph_with_subgraphs_keeps_its_projections():
    """drop_unused cannot prune such a graph: the fused product would be computed as well."""
    model = projection_graph()
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "branch", [], [out])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    model.graph.input.append(flag)
    model.graph.node.append(
        helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch)
    )
    assert_left_alone(model, separate_projections)


def test_drop_unused_keeps_what_the_graph_gives_and_graphs_with_subgraphs():
    weight = numpy_helper.from_array(np.ones(2, np.float32), "weight")
    dead = helper.make_node("Neg", ["x"], ["unread"])
    out = helper.make_tensor_value_info("weight", TensorProto.FLOAT, [2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([dead], "g", [x], [out], [weight])
    drop_unused(graph)
    assert not graph.node and [t.name for t in graph.initializer] == ["weight"]
    # An If's branches read outer tensors without naming them: nothing is removed.
    branch = helper.make_graph([helper.make_node("Neg", ["unread"], ["y"])], "branch", [], [out])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    choose = helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([dead, choose], "g", [x, flag], [out], [weight])
    drop_unused(graph)
    assert [n.op_type for n in graph.node] == ["Neg", "If"]
