"""The fallback for plugin-flavour ONNX models in ONNX Runtime: the SelectiveScan node through a Python custom op.

The default is our native op library (``m2s2l_edge.ops.ort_library``); this Python op runs where that library cannot
be built (no ONNX Runtime headers, no compiler), chosen by ``ort_session`` with a warning, or asked for explicitly
(``scan_op="python"``). The node is executed by onnxruntime-extensions' Python custom ops, which call our own scan
(``m2s2l_edge.ops.selective_scan``, backend "cpu" — the C++ kernel — when it builds, else "torch"): no second
implementation of the recurrence exists here.

onnxruntime-extensions only dispatches Python ops registered in its own domain ``ai.onnx.contrib``, and its Python
bridge has no float16 type. So ``python_scan_model`` rewrites a *copy* of the model in memory, never the exported
file: each SelectiveScan node moves to ``ai.onnx.contrib`` (op type by input count, since a Python op has a fixed
arity), keeps only ``delta_softplus`` (the TensorRT-only attributes are dropped), and in FP16 graphs gets explicit
Casts float16 → float32 around it. That matches the plugin's FP16 contract exactly: FP16 inputs are widened, the
state and accumulation are float32, y is rounded to FP16 once.
"""

from __future__ import annotations

import functools
import logging

from m2s2l_edge.ops import spec

logger = logging.getLogger(__name__)

PYOP_DOMAIN = "ai.onnx.contrib"
# Distinct op types per arity (a Python op has fixed inputs); prefixed so they cannot clash with extensions' own ops.
_PYOP_TYPES = {7: "M2S2LSelectiveScan", 8: "M2S2LSelectiveScanGated"}


@functools.cache
def scan_backend() -> str:
    """The scan backend the Python SelectiveScan op runs: "cpu" (the C++ kernel) when it builds, else "torch"."""
    from m2s2l_edge.ops import cpu_kernel

    if cpu_kernel.is_available():
        name = "cpu"
    else:
        name = "torch"
        logger.warning("Python SelectiveScan op: C++ CPU kernel unavailable (%s); using the 'torch' scan",
                       cpu_kernel.unavailable_reason())
    logger.info("Python SelectiveScan op for ONNX Runtime: scan backend %s", name)
    return name


def _run_scan(u, delta, A, B, C, D, delta_bias, z=None, delta_softplus=0):
    import numpy as np
    import torch

    from m2s2l_edge.ops import selective_scan

    def t(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    with torch.inference_mode():
        y = selective_scan(t(u), t(delta), t(A), t(B), t(C), t(D), t(z), t(delta_bias), bool(delta_softplus),
                           backend=scan_backend())
    return y.numpy()


@functools.cache
def register_python_scan_ops() -> str:
    """Register the Python SelectiveScan ops with onnxruntime-extensions (once per process); returns the path of the
    extensions library to pass to ``SessionOptions.register_custom_ops_library``."""
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as e:
        raise ImportError(
            f"running SelectiveScan nodes in ONNX Runtime needs onnxruntime-extensions ({e}): "
            "pip install 'm2s2l-edge[onnx]', or export with --scan portable"
        ) from None
    f32 = PyCustomOpDef.dt_float
    for arity, op_type in _PYOP_TYPES.items():
        onnx_op(op_type=op_type, domain=PYOP_DOMAIN, inputs=[f32] * arity, outputs=[f32],
                attrs={"delta_softplus": PyCustomOpDef.dt_int64})(_run_scan)
    return get_library_path()


def python_scan_model(model):
    """A copy of a plugin-flavour ModelProto whose SelectiveScan nodes run as Python ops (see module docstring)."""
    import onnx
    import onnx.helper as oh

    from m2s2l_edge.artifacts.onnx_graph import GraphInfo, is_scan_node

    out = onnx.ModelProto()
    out.CopyFrom(model)
    info = GraphInfo(model)
    nodes = []
    for i, node in enumerate(out.graph.node):
        if not is_scan_node(node):
            nodes.append(node)
            continue
        if len(node.input) not in _PYOP_TYPES:
            raise ValueError(f"SelectiveScan node {node.name!r} has {len(node.input)} inputs; expected 7 or 8")
        inputs = list(node.input)
        for j, name in enumerate(inputs):
            if name and info.types.get(name, onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT:
                wide = f"{name}/pyop_f32_{i}"
                nodes.append(oh.make_node("Cast", [name], [wide], name=f"{node.name}/cast_in{j}",
                                          to=onnx.TensorProto.FLOAT))
                inputs[j] = wide
        out_type = info.types.get(node.output[0], onnx.TensorProto.FLOAT)
        y = node.output[0] if out_type == onnx.TensorProto.FLOAT else f"{node.output[0]}/pyop_f32_{i}"
        softplus = next((a.i for a in node.attribute if a.name == "delta_softplus"), 0)
        nodes.append(oh.make_node(_PYOP_TYPES[len(inputs)], inputs, [y], name=node.name, domain=PYOP_DOMAIN,
                                  delta_softplus=softplus))
        if y != node.output[0]:
            nodes.append(oh.make_node("Cast", [y], [node.output[0]], name=f"{node.name}/cast_out", to=out_type))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    opsets = [o for o in out.opset_import if o.domain != spec.ONNX_DOMAIN]
    opsets.append(oh.make_opsetid(PYOP_DOMAIN, 1))
    del out.opset_import[:]
    out.opset_import.extend(opsets)
    return out
