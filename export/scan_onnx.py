"""The SelectiveScan operator in ONNX: the custom node (plugin flavour) and its standard-ONNX lowering (portable).

Plugin flavour (docs/DESIGN.md §5): one node per scan call, ``op_type`` ``SelectiveScan`` in domain
``spec.ONNX_DOMAIN``, attributes ``delta_softplus`` (int), ``plugin_version`` and ``plugin_namespace`` (TensorRT 10.3
does not derive the namespace from the domain, so it is written explicitly), inputs in ``spec.INPUT_NAMES`` order.
Types follow the TensorRT plugin's ``supportsFormatCombination``: u, delta, B, C, z and y share one type T (float32
or float16); A, D and delta_bias are always float32 (parameters; the FP16 graph keeps them exact).

Node inputs and shapes:

    u, delta:        (B, KD, L)     T
    A:               (KD, N)        float32, A = -exp(A_log) folded into an initializer
    B, C:            (B, K, N, L)   T
    D, delta_bias:   (KD,)          float32 (always present: an absent one is exported as zeros)
    z (optional):    (B, KD, L)     T (the 8th input; 7 inputs mean no gate)
    y:               (B, KD, L)     T

Portable flavour: every SelectiveScan node is replaced by standard ONNX ops (``lower_scans``), so the model runs on
any ONNX Runtime build and on TensorRT without a plugin. The form was chosen by measurement in ONNX Runtime (see
``lower_scans``); it keeps the reference recurrence h_t = exp(dt_t·A)·h_{t-1} + dt_t·B_t·u_t (exp(dt·A) ≤ 1, no
division, no cumulative products), so it cannot overflow where the reference does not.
"""

from __future__ import annotations

import functools
import logging

from m2s2l_edge.artifacts.onnx_graph import GraphInfo, is_scan_node
from m2s2l_edge.ops import spec

logger = logging.getLogger(__name__)

# Attributes written on every SelectiveScan node, in this order.
NODE_ATTRIBUTES = ("delta_softplus", "plugin_version", "plugin_namespace")
# Indices (into spec.INPUT_NAMES) of the inputs that carry activations (type T); the others are float32 parameters.
_ACTIVATION_INPUTS = tuple(i for i, name in enumerate(spec.INPUT_NAMES) if name in ("u", "delta", "B", "C", "z"))

_FLOAT = 1  # onnx.TensorProto.FLOAT, spelled out so this module imports onnx only inside functions
_FLOAT16 = 10


@functools.cache
def scan_op_schema():
    """The node's ONNX schema. Not registered globally: it is handed to onnxscript's tracer (which needs a schema to
    build a node) and documents the contract; ONNX's checker treats the custom domain as opaque."""
    import onnx.defs as defs

    param = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    types = {name: ("T" if i in _ACTIVATION_INPUTS else "tensor(float)") for i, name in enumerate(spec.INPUT_NAMES)}
    inputs = [
        param(name, types[name], param_option=optional) if name == "z" else param(name, types[name])
        for name in spec.INPUT_NAMES
    ]
    attr = defs.OpSchema.Attribute
    string = defs.OpSchema.AttrType.STRING
    return defs.OpSchema(
        spec.OP_NAME,
        spec.ONNX_DOMAIN,
        spec.ONNX_DOMAIN_VERSION,
        "Mamba selective scan (docs/DESIGN.md §4); state and accumulation in float32 whatever T is.",
        inputs=inputs,
        outputs=[param(name, "T") for name in spec.OUTPUT_NAMES],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "activations")],
        attributes=[
            attr("delta_softplus", defs.OpSchema.AttrType.INT, "1: dt = softplus(delta + delta_bias)", required=True),
            attr("plugin_version", string, "TensorRT plugin creator version", required=True),
            attr("plugin_namespace", string, "TensorRT plugin creator namespace", required=True),
        ],
    )


def scan_translation(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """``custom_translation_table`` entry for ``torch.ops.m2s2l.selective_scan.default`` (dynamo exporter).

    The op's argument order (…, D, z, delta_bias, …) differs from the node's (…, D, delta_bias[, z]): the node's is
    the plugin's, where the one optional input comes last.
    """
    import numpy as np
    import onnxscript
    from onnxscript import opset18 as op

    kd = u.shape[1]
    if D is None or delta_bias is None:
        if not isinstance(kd, int):
            raise ValueError("SelectiveScan export: the channel dimension KD must be static to materialise D / bias")
        zeros = op.Constant(value=onnxscript.ir.tensor(np.zeros(kd, np.float32)))
        D = zeros if D is None else D
        delta_bias = zeros if delta_bias is None else delta_bias
    inputs = [u, delta, A, B, C, D, delta_bias] + ([z] if z is not None else [])
    node = onnxscript.values.Op(onnxscript.values.Opset(spec.ONNX_DOMAIN, spec.ONNX_DOMAIN_VERSION), spec.OP_NAME,
                                scan_op_schema())
    return node(
        *inputs,
        delta_softplus=int(bool(delta_softplus)),
        plugin_version=spec.PLUGIN_VERSION,
        plugin_namespace=spec.PLUGIN_NAMESPACE,
    )


def _attribute(node, name: str, default=None):
    import onnx.helper

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Builder:
    """Appends uniquely named nodes and constants under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, hint: str, values, dtype) -> str:
        import numpy as np
        import onnx.numpy_helper

        name = self.name(hint)
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def ints(self, hint: str, values) -> str:
        import numpy as np

        return self.const(hint, list(values), np.int64)

    def __call__(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs):
        import onnx.helper

        outputs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(onnx.helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs))
        return outputs[0] if n_out == 1 else outputs


# ---------------------------------------------------------------------------------------------------------------
# Portable lowering

SCAN_FORMS = ("precompute", "in_body")
DEFAULT_SCAN_FORM = "in_body"


def _scan_body(form: str, k: int, dg: int, n: int, a_name: str, prefix: str):
    """The ONNX Scan body: one time step of the recurrence for all (B, K, N, Dg) states at once.

    ``precompute``: scan inputs dA_t, dBu_t (B, K, N, Dg) and C_t (B, K, 1, N), computed outside in one vectorised
    pass; the body is one FMA and one batched matvec: h = dA_t·h + dBu_t; y_t = C_t @ h.
    ``in_body``: scan inputs dt_t, dtu_t (B, K, 1, Dg), B_t (B, K, N, 1), C_t (B, K, 1, N); the body computes
    exp(dt_t·A) itself (A (K, N, Dg) from the outer scope), so no (L, B, K, N, Dg) tensor is materialised.
    """
    import onnx
    import onnx.helper as oh

    f = onnx.TensorProto.FLOAT
    b = _Builder(f"{prefix}/body")

    def vi(name, shape):
        return oh.make_tensor_value_info(name, f, shape)

    h_in = b.name("h_in")
    state_shape = ["batch", k, n, dg]
    if form == "precompute":
        da, dbu, c_t = b.name("dA_t"), b.name("dBu_t"), b.name("C_t")
        inputs = [vi(h_in, state_shape), vi(da, state_shape), vi(dbu, state_shape), vi(c_t, ["batch", k, 1, n])]
        h_out = b("Add", [b("Mul", [da, h_in]), dbu], "h_out")
    else:
        dt, dtu, b_t, c_t = b.name("dt_t"), b.name("dtu_t"), b.name("B_t"), b.name("C_t")
        inputs = [vi(h_in, state_shape), vi(dt, ["batch", k, 1, dg]), vi(dtu, ["batch", k, 1, dg]),
                  vi(b_t, ["batch", k, n, 1]), vi(c_t, ["batch", k, 1, n])]
        da = b("Exp", [b("Mul", [dt, a_name])], "dA")
        h_out = b("Add", [b("Mul", [da, h_in]), b("Mul", [b_t, dtu])], "h_out")
    y_t = b("MatMul", [c_t, h_out], "y_t")  # (B, K, 1, N) @ (B, K, N, Dg) → (B, K, 1, Dg)
    outputs = [vi(h_out, state_shape), vi(y_t, ["batch", k, 1, dg])]
    return oh.make_graph(b.nodes, f"{prefix}_body", inputs, outputs, initializer=b.initializers)


def _lower_one(node, info: GraphInfo, index: int, form: str) -> tuple[list, list]:
    """Standard-ONNX nodes (and constants) computing ``node``'s output; see ``lower_scans``."""
    import onnx

    inputs = list(node.input) + [""] * (len(spec.INPUT_NAMES) - len(node.input))
    named = dict(zip(spec.INPUT_NAMES, inputs, strict=True))
    kd, n = info.shape(named["A"])
    _, k, n_b, length = info.shape(named["B"])
    if n_b != n or k is None or length is None or kd % k:
        raise ValueError(f"SelectiveScan lowering: inconsistent shapes A {(kd, n)} and B {info.shape(named['B'])}")
    dg = kd // k
    softplus = bool(_attribute(node, "delta_softplus", 0))
    out_name = node.output[0]
    out_type = info.types.get(out_name, _FLOAT)
    b = _Builder(f"portable_scan_{index}")

    def f32(name: str) -> str:
        # FP16 graphs: the scan computes in float32 (docs/DESIGN.md §5), with the casts explicit in the graph.
        if not name or info.types.get(name, _FLOAT) == _FLOAT:
            return name
        return b("Cast", [name], "f32", to=onnx.TensorProto.FLOAT)

    u, delta, b_in, c_in = (f32(named[x]) for x in ("u", "delta", "B", "C"))
    z = f32(named["z"])
    # A (KD, N) → (K, Dg, N) → (K, N, Dg): a constant subgraph, folded once by ONNX Runtime / TensorRT.
    a_knd = b("Transpose", [b("Reshape", [named["A"], b.ints("shape", [k, dg, n])], "A_kdn")], "A_knd",
              perm=[0, 2, 1])

    dt = delta
    if named["delta_bias"]:
        dt = b("Add", [dt, b("Unsqueeze", [named["delta_bias"], b.ints("axes", [1])])], "dt_biased")  # (B, KD, L)
    if softplus:
        # softplus(x) = relu(x) + log(1 + exp(-|x|)): exp never overflows, where a plain log(1 + exp(x)) is inf for
        # x > 88. Spelled with Exp / Log rather than Softplus, which ONNX Runtime's CPU provider computes scalar
        # by scalar (several times slower than its vectorised Exp and Log at the paper preset).
        tail = b("Log", [b("Add", [b("Exp", [b("Neg", [b("Abs", [dt])])]), b.const("one", 1.0, "float32")])], "sp")
        dt = b("Add", [b("Relu", [dt]), tail], "dt")

    to_groups = b.ints("shape_bkdl", [0, k, dg, length])

    def time_major(x: str, hint: str) -> str:
        # (B, KD, L) → (B, K, Dg, L) → (L, B, K, Dg) → (L, B, K, 1, Dg)
        t = b("Transpose", [b("Reshape", [x, to_groups])], hint, perm=[3, 0, 1, 2])
        return b("Unsqueeze", [t, b.ints("axes", [3])], hint + "5")

    dt_l = time_major(dt, "dt_l")  # (L, B, K, 1, Dg)
    dtu_l = time_major(b("Mul", [dt, u], "dtu"), "dtu_l")  # (L, B, K, 1, Dg)
    b_l = b("Unsqueeze", [b("Transpose", [b_in], "B_l", perm=[3, 0, 1, 2]), b.ints("axes", [4])], "B_l5")  # (L,B,K,N,1)
    c_l = b("Unsqueeze", [b("Transpose", [c_in], "C_l", perm=[3, 0, 1, 2]), b.ints("axes", [3])], "C_l5")  # (L,B,K,1,N)

    # h_0 = 0, shaped (B, K, N, Dg) with the (possibly symbolic) batch taken from u.
    batch = b("Shape", [u], "batch", start=0, end=1)
    h0_shape = b("Concat", [batch, b.ints("knd", [k, n, dg])], "h0_shape", axis=0)
    h0 = b("ConstantOfShape", [h0_shape], "h0", value=onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0]))
    if form == "precompute":
        # Dg innermost: every broadcast below repeats a contiguous Dg-long row, the pattern ONNX Runtime's
        # element-wise kernels vectorise (an N=16-long inner broadcast made these Muls 1.5x slower).
        da_l = b("Exp", [b("Mul", [dt_l, a_knd])], "dA_l")  # (L, B, K, N, Dg)
        dbu_l = b("Mul", [b_l, dtu_l], "dBu_l")  # (L, B, K, N, Dg)
        scan_inputs = [da_l, dbu_l, c_l]
    else:
        scan_inputs = [dt_l, dtu_l, b_l, c_l]
    body = _scan_body(form, k, dg, n, a_knd, f"portable_scan_{index}")
    _, y_l = b("Scan", [h0, *scan_inputs], "scan", n_out=2, body=body, num_scan_inputs=len(scan_inputs))
    # (L, B, K, 1, Dg) → (B, K, 1, Dg, L) → (B, KD, L)
    y = b("Reshape", [b("Transpose", [y_l], "y_t", perm=[1, 2, 3, 4, 0]), b.ints("shape_bkdl", [0, kd, length])], "y")
    if named["D"]:
        y = b("Add", [y, b("Mul", [u, b("Unsqueeze", [named["D"], b.ints("axes", [1])])])], "y_skip")
    if z:
        y = b("Mul", [y, b("Mul", [z, b("Sigmoid", [z])], "silu_z")], "y_gated")
    if out_type == _FLOAT:
        b.nodes.append(onnx.helper.make_node("Identity", [y], [out_name], name=b.name("out")))
    else:
        b.nodes.append(onnx.helper.make_node("Cast", [y], [out_name], name=b.name("out"), to=out_type))
    return b.nodes, b.initializers


def lower_scans(model, *, form: str = DEFAULT_SCAN_FORM):
    """A copy of ``model`` with every SelectiveScan node replaced by standard ONNX ops and the custom domain removed.

    Each node becomes: dt = softplus(delta + delta_bias) (stable form), a transpose to time-major (L, B, K, ·, Dg),
    then an ONNX ``Scan`` over L whose state is h (B, K, N, Dg) in float32, then the skip term D·u and the SiLU gate.
    ``form`` picks what the Scan body does (``_scan_body``). ``in_body`` (the default) computes exp(dt_t·A) inside
    the body, step by step; ``precompute`` computes dA and dB·u for all steps in one vectorised pass and leaves one
    FMA in the body. On ONNX Runtime's CPU provider both ran within noise of each other (in_body 0-10 % faster at the
    paper preset, benchmarks/bench_onnx_vs_torch.py), but precompute materialises two (L, B, K·N·Dg) float32 tensors
    (2 x 134 MB per clip at the paper preset, 2 GB at batch 8) where in_body needs none; TensorRT fuses the body's
    point-wise ops into one kernel per step.
    """
    import onnx

    if form not in SCAN_FORMS:
        raise ValueError(f"unknown scan form {form!r}; valid: {', '.join(SCAN_FORMS)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    info = GraphInfo(model)
    new_nodes, new_inits, count = [], [], 0
    for node in out.graph.node:
        if is_scan_node(node):
            nodes, inits = _lower_one(node, info, count, form)
            new_nodes.extend(nodes)
            new_inits.extend(inits)
            count += 1
        else:
            new_nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(new_inits)
    kept = [o for o in out.opset_import if o.domain != spec.ONNX_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    logger.info("lowered %d SelectiveScan node(s) to standard ONNX (form=%s)", count, form)
    return out
