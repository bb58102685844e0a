"""Rewrites of the attention torch.onnx writes, each computing the same values with less work,
applied to the exported graph before any runtime reads it (export.py's `export_graph`).

Each undoes a general form of the exporter that our attention does not need, and with them
OpenVINO fuses each layer's attention into one kernel. On all-MiniLM-L6-v2's int8 graph
(2-core AMD EPYC, 2026-12-02, docs/performance.md): without the NaN guards batch 32 ran about
5% faster; the keys' single transpose, with `SelfAttention` splitting q, k, v before its
transposes, then gave 5.6% more at batch 32 and 10% less time at batch 1 (the split alone 3.0%
and 4.8%); q, k and v projected separately, 2-8% more again at batch 32. ONNX Runtime's fp32
output is the same to the bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def simplify_attention(path: Path) -> None:
    """Rewrite the ONNX graph at `path` in place (see the functions below), then drop the
    nodes and weights that nothing reads any more."""
    import onnx

    proto = onnx.load(str(path))
    drop_softmax_nan_guards(proto.graph)
    transpose_keys_directly(proto.graph)
    separate_projections(proto.graph)
    drop_unused(proto.graph)
    onnx.save(proto, str(path))


def drop_softmax_nan_guards(graph) -> None:
    """Route around the `Where(IsNaN(p), 0, p)` torch.onnx puts after each attention softmax
    (its readers read the softmax itself; `drop_unused` then removes the guard).

    The exporter guards attention with a boolean mask against a query row whose keys are all
    masked (a softmax of only -inf is NaN). Our mask hides padding keys only, and every
    sentence keeps its [CLS] and [SEP], so no row is ever all masked and the guard never changes
    a value. It costs a pass over every attention matrix, and it keeps OpenVINO from fusing
    attention into one kernel."""
    made_by = producers(graph)
    guarded = {}  # a guard's output -> the softmax output it guards
    for where in graph.node:
        isnan = made_by.get(where.input[0]) if where.op_type == "Where" else None
        if isnan is None or isnan.op_type != "IsNaN" or where.input[2] != isnan.input[0]:
            continue
        if getattr(made_by.get(isnan.input[0]), "op_type", None) == "Softmax":
            guarded[where.output[0]] = isnan.input[0]
    for node in graph.node:
        node.input[:] = [guarded.get(name, name) for name in node.input]


def transpose_keys_directly(graph) -> None:
    """Write each attention's transposed keys (B, A, T, d) -> (B, A, d, T) as one Transpose.

    torch.onnx swaps the last two axes of any rank: Reshape to (-1, T, d), Transpose (0, 2, 1),
    Reshape to (leading axes, d, T), the shapes sliced from Shape(keys). For our 4-D keys one
    Transpose (0, 1, 3, 2) is the same; OpenVINO folds it into its attention kernel (it cannot
    see through the reshapes, and ran them as separate layout copies)."""
    import onnx

    made_by, read_by = producers(graph), consumers(graph)
    ranks = recorded_ranks(graph)
    swaps = []  # (the Transpose, the Reshape after it, the keys)
    for node in graph.node:
        if node.op_type != "Transpose":
            continue
        squeeze, readers = made_by.get(node.input[0]), read_by.get(node.output[0], [])
        if squeeze is None or squeeze.op_type != "Reshape" or len(readers) != 1:
            continue
        keys, unsqueeze = squeeze.input[0], readers[0]
        if unsqueeze.op_type != "Reshape" or unsqueeze.input[0] != node.output[0]:
            continue
        if ranks.get(keys) == 4 and _swaps_last_axes(graph, made_by, squeeze, node, unsqueeze):
            swaps.append((node, unsqueeze, keys))
    for node, unsqueeze, keys in swaps:
        # The one Transpose takes over the last Reshape's output; drop_unused removes the rest.
        transpose = onnx.helper.make_node(
            "Transpose", [keys], [unsqueeze.output[0]], name=node.name, perm=[0, 1, 3, 2]
        )
        unsqueeze.output[0] += "_replaced"
        graph.node.insert(list(graph.node).index(node), transpose)


def separate_projections(graph) -> None:
    """Write each fused projection that is split right after it (our q, k, v: MatMul by a
    (C, 3C) weight, Add the bias, Split in 3 along the last axis) as one MatMul and Add a part.

    The same products, each column computed once either way; ONNX Runtime's fp32 output is the
    same to the bit. OpenVINO then runs three int8 matmuls straight into its attention kernel,
    where it ran one, a reference-code Split in bf16 and a layout copy: all-MiniLM-L6-v2's int8
    graph 2-8% faster at batch 32 (docs/performance.md). Graphs with subgraphs are left alone."""
    import onnx
    from onnx import numpy_helper

    if has_subgraphs(graph):  # drop_unused could not remove the fused product: it would stay
        return
    made_by, read_by, ranks = producers(graph), consumers(graph), recorded_ranks(graph)
    given = {value.name for value in graph.output}
    taken = _names(graph)
    for split in [node for node in graph.node if node.op_type == "Split"]:
        add = made_by.get(split.input[0])
        matmul = made_by.get(add.input[0]) if getattr(add, "op_type", None) == "Add" else None
        if getattr(matmul, "op_type", None) != "MatMul":
            continue
        fused = (matmul.output[0], add.output[0])
        if any(len(read_by[name]) != 1 or name in given for name in fused):
            continue  # the fused product is read elsewhere too: keep it
        weight = constant(graph, made_by, matmul.input[1])
        bias = constant(graph, made_by, add.input[1])
        if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[1:]:
            continue
        parts, attributes = len(split.output), {a.name: a for a in split.attribute}
        axis = attributes["axis"].i if "axis" in attributes else 0
        if len(split.input) != 1 or "split" in attributes:
            continue  # part sizes given (an input, or before opset 13 an attribute)
        if axis not in (-1, ranks.get(split.input[0], 0) - 1) or weight.shape[1] % parts:
            continue  # another axis than the features', or parts of unequal width
        width, at = weight.shape[1] // parts, list(graph.node).index(split)
        graph.node.remove(split)
        for i, output in enumerate(split.output):
            columns = slice(i * width, (i + 1) * width)
            w = _fresh(taken, f"{matmul.input[1]}_part{i}")
            b = _fresh(taken, f"{add.input[1]}_part{i}")
            product = _fresh(taken, f"{output}_product")
            graph.initializer.append(numpy_helper.from_array(weight[:, columns].copy(), w))
            graph.initializer.append(numpy_helper.from_array(bias[columns].copy(), b))
            multiply = onnx.helper.make_node(
                "MatMul", [matmul.input[0], w], [product], name=product
            )
            biased = onnx.helper.make_node(
                "Add", [product, b], [output], name=_fresh(taken, f"{output}_bias")
            )
            graph.node.insert(at + 2 * i, multiply)
            graph.node.insert(at + 2 * i + 1, biased)


def _names(graph) -> set[str]:
    """Every tensor and node name in use."""
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    return names | {name for node in graph.node for name in (*node.output, node.name)}


def _fresh(taken: set[str], name: str) -> str:
    """`name`, or with a number after it if that is in use; marked as in use."""
    fresh, n = name, 1
    while fresh in taken:
        fresh, n = f"{name}_{n}", n + 1
    taken.add(fresh)
    return fresh


def _swaps_last_axes(graph, made_by: dict, squeeze, transpose, unsqueeze) -> bool:
    """Whether Reshape `squeeze` -> `transpose` -> Reshape `unsqueeze` is torch.onnx's swap of the
    last two axes: to (-1, [-2], [-1]), perm (0, 2, 1), to ([:-2], [-1], [-2]), where each [...]
    is a Slice of Shape(keys)."""
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    first, last = made_by.get(squeeze.input[1]), made_by.get(unsqueeze.input[1])
    if perm != [0, 2, 1] or first is None or last is None:
        return False
    if first.op_type != "Concat" or last.op_type != "Concat" or len(first.input) != 3:
        return False
    minus_one = constant(graph, made_by, first.input[0])
    slices = [made_by.get(name) for name in (*first.input[1:], *last.input)]
    if minus_one is None or minus_one.tolist() != [-1]:
        return False
    if any(node is None or node.op_type != "Slice" for node in slices):
        return False
    shape = made_by.get(slices[0].input[0])
    if shape is None or shape.op_type != "Shape" or shape.input[0] != squeeze.input[0]:
        return False
    part = {a.name: a.i for a in shape.attribute}  # torch.onnx writes start=0: the whole shape
    if part.get("start", 0) != 0 or "end" in part:
        return False
    same_shape = all(node.input[0] == slices[0].input[0] for node in slices)
    axes = [_sliced_axes(graph, made_by, node) for node in slices]
    return same_shape and axes == [[2], [3], [0, 1], [3], [2]]


def _sliced_axes(graph, made_by: dict, node) -> list[int] | None:
    """Which axes of a 4-D shape a Slice with constant bounds keeps (Python's slice clamps out
    of range bounds as ONNX does), else None."""
    if len(node.input) != 3:  # axes or steps given
        return None
    start, end = constant(graph, made_by, node.input[1]), constant(graph, made_by, node.input[2])
    if start is None or end is None or start.size != 1 or end.size != 1:
        return None
    return list(range(4))[int(start.flat[0]) : int(end.flat[0])]


def constant(graph, made_by: dict, name: str) -> np.ndarray | None:
    """The value of `name` if it is an initializer or a Constant node's tensor, else None."""
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    node = made_by.get(name)
    if node is None or node.op_type != "Constant" or node.attribute[0].name != "value":
        return None  # not a constant, or one of value_ints, value_float...: not torch.onnx's
    return numpy_helper.to_array(node.attribute[0].t)


def drop_unused(graph) -> None:
    """Remove the nodes whose outputs nothing reads (repeatedly), then the weights nothing reads
    and the shapes of tensors no node makes. A graph with subgraphs (If, Loop, Scan: they read
    outer tensors without naming them as inputs) is left as it is."""
    if has_subgraphs(graph):
        return
    outputs = {value.name for value in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unused = [node for node in graph.node if not any(name in read for name in node.output)]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    made = {name for node in graph.node for name in node.output}
    for value in [v for v in graph.value_info if v.name not in made]:
        graph.value_info.remove(value)


def has_subgraphs(graph) -> bool:
    """Whether a node holds a subgraph (If, Loop, Scan), which reads outer tensors without
    naming them as inputs."""
    from onnx import AttributeProto

    subgraph = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    return any(a.type in subgraph for node in graph.node for a in node.attribute)


def recorded_ranks(graph) -> dict:
    """Each tensor's name -> its number of axes, where the graph records its shape."""
    values = (*graph.input, *graph.value_info, *graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values}


def producers(graph) -> dict:
    """Each tensor's name -> the node that makes it."""
    return {name: node for node in graph.node for name in node.output}


def consumers(graph) -> dict:
    """Each tensor's name -> the nodes that read it."""
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers
