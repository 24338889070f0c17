"""Facts about an ONNX graph that the exporter (``m2s2l_edge.export.scan_onnx``) and the ONNX Runtime rewrite of
SelectiveScan nodes (``m2s2l_edge.runtime.ort_scan``) both read: which nodes are scans, and each value's type and
static shape. ``onnx`` is imported inside the functions that need it.
"""

from __future__ import annotations

from m2s2l_edge.ops import spec


def is_scan_node(node) -> bool:
    return node.op_type == spec.OP_NAME and node.domain == spec.ONNX_DOMAIN


def scan_nodes(model) -> list:
    return [n for n in model.graph.node if is_scan_node(n)]


class GraphInfo:
    """Element types and static shapes of a graph's values (from the exporter's value_info, completed by ONNX shape
    inference), and its initializers."""

    def __init__(self, model) -> None:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        g = inferred.graph
        self.types: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        for v in [*g.input, *g.output, *g.value_info]:
            t = v.type.tensor_type
            self.types[v.name] = t.elem_type
            if t.HasField("shape"):
                self.shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        self.initializers = {i.name: i for i in model.graph.initializer}
        for name, init in self.initializers.items():
            self.types[name] = init.data_type
            self.shapes[name] = tuple(init.dims)

    def shape(self, name: str) -> tuple:
        if name not in self.shapes:
            raise ValueError(f"SelectiveScan lowering: no shape known for {name!r} (export with static K, N, L)")
        return self.shapes[name]
