"""Export M²S²L to ONNX: the plugin flavour (one SelectiveScan node per scan call) or the portable one (standard ops).

Exporter: ``torch.onnx.export(dynamo=True)`` with a ``custom_translation_table`` entry for
``torch.ops.m2s2l.selective_scan``. The model is built with ``scan_backend="op"``, so ``torch.export`` sees each scan
as one opaque call of our custom operator (its fake kernel gives shapes) and the translation emits one custom-domain
node per call. Why this exporter and not the TorchScript one: in torch 2.13 the TorchScript exporter is deprecated,
cannot trace a ``torch.library.custom_op`` without a second symbolic registry, and leaves constant folding of
-exp(A_log) to ``do_constant_folding`` heuristics; the dynamo path gives a clean opset-18 graph, folds A into an
initializer through onnxscript's optimizer (checked below, not assumed), and handles the symbolic batch dimension
through ``torch.export`` dynamic shapes.

The portable flavour is the same export with every SelectiveScan node lowered to standard ONNX ops afterwards
(``scan_onnx.lower_scans``), so both flavours share one traced graph and differ only in the scan.

Precision: ``fp16`` exports the model in half precision with float32 input and outputs (a Cast after the input and
before each output: strongly typed TensorRT networks take the graph's types literally, so every precision change is
an explicit node). The scan keeps float32 state: the plugin node takes FP16 activations and float32 A / D /
delta_bias (the plugin's contract; those parameters are exported from the float32 weights, not rounded through
FP16), and the portable scan casts its inputs to float32 and its output back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from m2s2l_edge.artifacts import metadata as meta_mod
from m2s2l_edge.artifacts.checkpoint import weights_digest
from m2s2l_edge.export.outputs import FORMATS, check_onnx_output
from m2s2l_edge.export.scan_onnx import DEFAULT_SCAN_FORM, SCAN_FORMS
from m2s2l_edge.scoring.model import resolve_lambda, stored_number

logger = logging.getLogger(__name__)

SCAN_FLAVOURS = ("plugin", "portable")
PRECISIONS = ("fp32", "fp16")
# torch 2.13's exporter writes opset 18 natively and converts to others with ONNX's version converter, which has no
# 18 → 17 adapter for Split: opset 17 (LayerNormalization's first opset) cannot be produced. TensorRT >= 10 reads 18.
MIN_OPSET = 18
DEFAULT_OPSET = 18
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class ExportConfig:
    """How to export. ``batch`` is the static batch, or the example batch size when ``dynamic_batch``."""

    scan: str = "plugin"
    precision: str = "fp32"
    batch: int = 1
    dynamic_batch: bool = False
    opset: int = DEFAULT_OPSET
    scan_form: str = DEFAULT_SCAN_FORM  # portable flavour only: see scan_onnx.lower_scans

    def __post_init__(self) -> None:
        if self.scan not in SCAN_FLAVOURS:
            raise ValueError(f"unknown scan flavour {self.scan!r}; valid: {', '.join(SCAN_FLAVOURS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.scan_form not in SCAN_FORMS:
            raise ValueError(f"unknown scan form {self.scan_form!r}; valid: {', '.join(SCAN_FORMS)}")
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET}, got {self.opset} (the exporter's opset 18 graph cannot be "
                             "converted down: ONNX has no 18 -> 17 adapter for Split; TensorRT >= 10 reads opset 18)")

    @property
    def batch_label(self) -> int | str:
        return "dynamic" if self.dynamic_batch else self.batch


@dataclass(frozen=True)
class WeightsOrigin:
    """Where the weights came from, the data set they were trained on and a λ their checkpoint stored (for λ)."""

    description: str
    dataset: str | None = None
    lam: float | None = None
    normal_change: float | None = None  # the training footage's median frame change, when the checkpoint stored it


def load_source_model(weights: str | os.PathLike | None = None, preset: str | None = None, seed: int = 0):
    """The model to export: from a checkpoint (refusing one of another preset than ``preset``, when given), or a
    preset with fresh weights drawn from ``seed``. Returns (model, WeightsOrigin)."""
    if weights is not None:
        from m2s2l_edge.artifacts.checkpoint import load_model

        model, state = load_model(weights, expected_preset=preset)
        extra = state.get("extra") or {}
        dataset, lam = extra.get("dataset"), extra.get("lambda")
        desc = f"checkpoint {Path(weights).name} (epoch {state.get('epoch')})"
        return model.eval(), WeightsOrigin(desc, dataset if isinstance(dataset, str) else None, stored_number(lam),
                                         stored_number(extra.get("normal_change")))
    if preset is None:
        raise ValueError("give a checkpoint (--weights) or a preset (--preset) to export")
    from m2s2l_edge.models import create_model

    return create_model(preset, seed=seed).eval(), WeightsOrigin(f"preset {preset}, fresh weights (seed {seed})")


# ---------------------------------------------------------------------------------------------------------------
# Model preparation


def _scan_parameter_names(model) -> list[str]:
    """State-dict names of the parameters that only feed the scan as A (via A_log), D and delta_bias.

    They stay float32 in an FP16 export (the plugin's contract) and are used nowhere else in the forward pass:
    SS2D feeds ``dt_projs_bias`` only to the scan, and MambaMixer applies ``dt_proj.weight`` by matmul and passes
    ``dt_proj.bias`` to the scan as delta_bias.
    """
    from m2s2l_edge.layers.ssm import SS2D, MambaMixer

    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, SS2D):
            names += [f"{prefix}.{p}" for p in ("A_log", "D", "dt_projs_bias")]
        elif isinstance(module, MambaMixer):
            names += [f"{prefix}.{p}" for p in ("A_log", "D", "dt_proj.bias")]
    return names


def export_copy(model, precision: str):
    """A copy of ``model`` built with scan_backend "op" (one custom-op call per scan), in eval mode, rewritten for
    inference (``optimize_for_inference``: BatchNorm folded, SS2D's parallel convolutions merged, in FP32), in
    ``precision``. The caller's model is left untouched (its scan backend, dtype and training mode are unchanged).
    """
    from m2s2l_edge.models import M2S2L
    from m2s2l_edge.models.fold import optimize_for_inference

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = M2S2L(model.cfg.replace(scan_backend="op"))
    out.load_state_dict(state)
    out.eval()
    # TensorRT and ONNX Runtime fold BatchNorm themselves, but neither merges parallel convolutions.
    optimize_for_inference(out)
    if precision == "fp16":
        out.half()
        for name in _scan_parameter_names(out):
            parent, _, leaf = name.rpartition(".")
            module = out.get_submodule(parent)
            # From the float32 source: half-rounding A_log and then widening would change A.
            setattr(module, leaf, torch.nn.Parameter(state[name].float(), requires_grad=False))
    return out


class ExportWrapper(torch.nn.Module):
    """What is traced: clip (B, T, 3, H, W) float32 → (frame_pred, motion_pred) float32, each (B, 3, H, W).

    With ``half`` the model runs in FP16 between an explicit cast of the input and casts of both outputs, so the
    graph's interface stays float32 whatever its precision.
    """

    def __init__(self, model, half: bool) -> None:
        super().__init__()
        self.model = model
        self.half_precision = half

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.half_precision:
            frame, motion = self.model.predict(clip.half())
            return frame.float(), motion.float()
        return self.model.predict(clip)


def count_scan_calls(exported_program) -> int:
    """Calls of ``torch.ops.m2s2l.selective_scan`` in a ``torch.export`` graph."""
    from m2s2l_edge.ops import custom_op  # noqa: F401  (registers the operator)

    target = torch.ops.m2s2l.selective_scan.default
    return sum(1 for n in exported_program.graph.nodes if n.op == "call_function" and n.target is target)


# ---------------------------------------------------------------------------------------------------------------
# Graph passes


def fold_scan_parameters(model) -> int:
    """Make every SelectiveScan node's A, D and delta_bias an initializer, evaluating their constant producers
    (A = -exp(A_log): Exp, Neg, Cast, Reshape...) once with ONNX's reference evaluator. Returns how many were folded.

    onnxscript's optimizer folds these itself below its size limit (8192 input elements); the paper preset's SS2D A
    (4·512 × 16) is above it, and raising the limit globally would also fold large non-scan subgraphs. A producer
    chain that reaches a graph input is not constant: RuntimeError.
    """
    import onnx
    import onnx.helper as oh
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    from m2s2l_edge.artifacts.onnx_graph import is_scan_node
    from m2s2l_edge.ops import spec

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    folded = 0
    for node in [n for n in graph.node if is_scan_node(n)]:
        for role in ("A", "D", "delta_bias"):
            name = node.input[spec.INPUT_NAMES.index(role)]
            if name in inits:
                continue
            chain, needed, stack = set(), set(), [name]  # chain: ids of the producer nodes
            while stack:
                value = stack.pop()
                if value in inits:
                    needed.add(value)
                    continue
                if value not in producer:
                    raise RuntimeError(f"SelectiveScan {node.name}: {role} depends on graph input {value!r}")
                p = producer[value]
                if id(p) not in chain:
                    chain.add(id(p))
                    stack.extend(i for i in p.input if i)
            order = [n for n in graph.node if id(n) in chain]  # graph order is topological
            sub = oh.make_model(
                oh.make_graph(order, "fold", [], [oh.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                              initializer=[inits[i] for i in needed]),
                opset_imports=[o for o in model.opset_import if o.domain in _STANDARD_DOMAINS],
            )
            (value,) = ReferenceEvaluator(sub).run(None, {})
            graph.initializer.append(numpy_helper.from_array(value, name))
            inits[name] = graph.initializer[-1]
            folded += 1
    if folded:
        # The initializers now define those names: their producers go, and what only fed them goes with them.
        kept = [n for n in graph.node if not any(o in inits for o in n.output)]
        del graph.node[:]
        graph.node.extend(kept)
        _remove_dead_nodes(model)
        logger.info("folded %d scan parameter(s) into initializers", folded)
    return folded


def _remove_dead_nodes(model) -> None:
    """Drop nodes whose outputs nothing uses, then unused initializers (subgraph references count as uses)."""
    graph = model.graph

    def used_names() -> set[str]:
        used = {o.name for o in graph.output}
        stack = list(graph.node)
        while stack:
            n = stack.pop()
            used.update(n.input)
            for a in n.attribute:
                stack.extend(a.g.node if a.HasField("g") else [])
                for g in a.graphs:
                    stack.extend(g.node)
        return used

    while True:
        used = used_names()
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = used_names()
    keep_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)


# ---------------------------------------------------------------------------------------------------------------
# Graph checks


def check_graph(model, scan: str) -> None:
    """Refuse a graph that a plugin-free TensorRT or a plain ONNX Runtime could not run: any op outside the standard
    domain (bar SelectiveScan in the plugin flavour), ATen fallbacks, local functions, or a scan whose A / D /
    delta_bias is computed at run time instead of being an initializer. RuntimeError: an exporter bug, not a user
    error."""
    from m2s2l_edge.artifacts.onnx_graph import is_scan_node
    from m2s2l_edge.export.scan_onnx import NODE_ATTRIBUTES
    from m2s2l_edge.ops import spec

    if len(model.functions):
        raise RuntimeError(f"export left {len(model.functions)} local function(s): {[f.name for f in model.functions]}")
    inits = {i.name for i in model.graph.initializer}
    bad = set()
    for node in model.graph.node:
        if is_scan_node(node):
            if scan != "plugin":
                bad.add(f"{node.domain}::{node.op_type}")
                continue
            attrs = {a.name for a in node.attribute}
            if attrs != set(NODE_ATTRIBUTES):
                raise RuntimeError(f"SelectiveScan node {node.name} has attributes {sorted(attrs)}")
            for role in ("A", "D", "delta_bias"):
                name = node.input[spec.INPUT_NAMES.index(role)]
                if name not in inits:
                    raise RuntimeError(f"SelectiveScan node {node.name}: {role} ({name}) is not an initializer")
        elif node.domain not in _STANDARD_DOMAINS or node.op_type in ("ATen", "ATenOp"):
            bad.add(f"{node.domain or 'ai.onnx'}::{node.op_type}")
    if bad:
        raise RuntimeError(f"the {scan} graph holds non-standard ops: {', '.join(sorted(bad))}")


# ---------------------------------------------------------------------------------------------------------------
# Export


@dataclass(frozen=True)
class TracedOnnx:
    """One trace of a model: the plugin-flavour graph (never mutated) and what it was traced with. Both flavours
    derive from it, so exporting plugin and portable from one trace costs one ``torch.export``."""

    proto: object  # onnx.ModelProto, plugin flavour, scan parameters folded
    scan_calls: int
    preset: str
    precision: str
    batch: int
    dynamic_batch: bool
    opset: int
    rewrites: dict = field(default_factory=dict)  # optimize_for_inference's counts

    def check_matches(self, model, config: ExportConfig) -> None:
        want = (model.cfg.name, config.precision, config.batch, config.dynamic_batch, config.opset)
        have = (self.preset, self.precision, self.batch, self.dynamic_batch, self.opset)
        if want != have:
            raise ValueError(f"this trace was made for (preset, precision, batch, dynamic, opset) = {have}, "
                             f"not {want}")


def trace_onnx(model, config: ExportConfig) -> TracedOnnx:
    """Trace ``model`` (M2S2L) into a plugin-flavour ONNX graph (``config.scan`` is not used here)."""
    from m2s2l_edge.artifacts.onnx_graph import scan_nodes
    from m2s2l_edge.export.scan_onnx import scan_translation
    from m2s2l_edge.models.fold import inference_rewrites
    from m2s2l_edge.ops import custom_op  # noqa: F401  (registers torch.ops.m2s2l.selective_scan)

    cfg = model.cfg
    inference_model = export_copy(model, config.precision)
    wrapper = ExportWrapper(inference_model, config.precision == "fp16").eval()
    # A dynamic batch is traced at 2: torch.export specialises sizes 0 and 1.
    example_batch = max(2, config.batch) if config.dynamic_batch else config.batch
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(example_batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size,
                         generator=generator) * 2 - 1
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if config.dynamic_batch else None
    logger.info("tracing %s (%s, batch %s, opset %d)", cfg.name, config.precision, config.batch_label, config.opset)
    program = torch.onnx.export(
        wrapper,
        (example,),
        dynamo=True,
        input_names=[meta_mod.INPUT_NAME],
        output_names=list(meta_mod.OUTPUT_NAMES),
        opset_version=config.opset,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table={torch.ops.m2s2l.selective_scan.default: scan_translation},
        optimize=True,
        verbose=False,
    )
    calls = count_scan_calls(program.exported_program)
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in _STANDARD_DOMAINS), None)
    if got != config.opset:
        # The exporter keeps its native opset when version conversion fails, with only a log line.
        raise ValueError(f"the exporter could not convert the graph to opset {config.opset} (it holds opset {got}); "
                         f"use --opset {got}")
    fold_scan_parameters(proto)
    nodes = len(scan_nodes(proto))
    if nodes != calls:
        raise RuntimeError(f"the model makes {calls} scan calls but the graph has {nodes} SelectiveScan nodes")
    check_graph(proto, "plugin")
    return TracedOnnx(proto, calls, cfg.name, config.precision, config.batch, config.dynamic_batch, config.opset,
                      rewrites=inference_rewrites(inference_model))


def to_onnx(model, config: ExportConfig, traced: TracedOnnx | None = None):
    """The ONNX graph of ``config.scan`` flavour (from ``traced`` when given, else a fresh trace), without metadata.
    Returns (ModelProto, scan call count); nothing is written."""
    import onnx

    from m2s2l_edge.export.scan_onnx import lower_scans

    if traced is None:
        traced = trace_onnx(model, config)
    traced.check_matches(model, config)
    if config.scan == "portable":
        proto = lower_scans(traced.proto, form=config.scan_form)
        check_graph(proto, "portable")
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(traced.proto)
    return proto, traced.scan_calls


@contextmanager
def _published(out: Path, sidecar: Path) -> Iterator[tuple[Path, Path]]:
    """Temporary paths for the model and its sidecar, published together on success (sidecar first, so a reader
    that finds the model also finds its metadata) and removed on any error."""
    from m2s2l_edge.io import atomic_path

    with ExitStack() as stack:
        tmp_model = stack.enter_context(atomic_path(out))
        tmp_sidecar = stack.enter_context(atomic_path(sidecar))
        yield tmp_model, tmp_sidecar


def export_and_check(
    model,
    out: str | os.PathLike,
    config: ExportConfig = ExportConfig(),  # noqa: B008 - frozen dataclass, immutable
    *,
    source: WeightsOrigin | None = None,
    dataset: str | None = None,
    lam: float | None = None,
    check: bool = True,
    threads: int | None = None,
    traced: TracedOnnx | None = None,
):
    """Export ``model`` to ``out`` (ONNX) and ``<out>.json`` (metadata); optionally check parity in ONNX Runtime.

    The check runs on the written file before it is published: when it fails, ``parity.ParityError`` (carrying the
    report) is raised and nothing is left at ``out``. Returns (path, ParityReport or None).
    ``dataset`` / ``lam`` choose λ (explicit λ, else the paper's for the data set, else the default); ``dataset``
    defaults to the checkpoint's. ``traced``: reuse a ``trace_onnx`` of the same model and settings.
    """
    import onnx

    out = check_onnx_output(out)
    source = source or WeightsOrigin(f"in-memory model ({model.cfg.name})")
    dataset = dataset if dataset is not None else source.dataset
    lam_value, lam_source = resolve_lambda(dataset, lam, stored=source.lam)
    sidecar = meta_mod.sidecar_path(out)
    # Claim the output paths before the (slow) export, so an unwritable folder fails at once.
    with _published(out, sidecar) as (tmp_model, tmp_sidecar):
        traced = traced if traced is not None else trace_onnx(model, config)
        proto, calls = to_onnx(model, config, traced)
        meta = meta_mod.ExportMetadata(
            config=model.cfg.replace(scan_backend="auto").to_dict(),
            scan=config.scan,
            precision=config.precision,
            batch=config.batch_label,
            lam=lam_value,
            lambda_source=lam_source,
            dataset=dataset,
            opset=config.opset,
            scan_calls=calls,
            rewrites=traced.rewrites,
            weights=source.description,
            weights_sha256=weights_digest(model),
            versions=meta_mod.library_versions(),
            normal_change=source.normal_change,
        )
        meta_mod.attach(proto, meta)
        proto.doc_string = f"M2S2L '{model.cfg.name}' exported by m2s2l-edge ({config.scan} scan, {config.precision})"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(tmp_model))
        tmp_sidecar.write_text(meta.to_json() + "\n", encoding="utf-8")
        for tmp in (tmp_model, tmp_sidecar):
            # The temporary files are created owner-only (mkstemp); an exported model is an artefact to share.
            os.chmod(tmp, 0o644)
        report = None
        if check:
            from m2s2l_edge.export.parity import ParityError, check_parity

            report = check_parity(tmp_model, model, threads=threads)
            if not report.passed:
                raise ParityError(report)
        logger.info("wrote %s (%d SelectiveScan call(s), %s flavour) and %s", out, calls, config.scan, sidecar.name)
    return out, report


def export_onnx(
    model,
    out: str | os.PathLike,
    config: ExportConfig = ExportConfig(),  # noqa: B008 - frozen dataclass, immutable
    *,
    source: WeightsOrigin | None = None,
    dataset: str | None = None,
    lam: float | None = None,
    check: bool = False,
    threads: int | None = None,
    traced: TracedOnnx | None = None,
) -> Path:
    """Export ``model`` to ONNX at ``out`` (plus ``<out>.json``) and return the path; see ``export_and_check``.

    The seam for engine builders: ``build_engine(export_onnx(model, tmp / "m.onnx", cfg), ...)``.
    """
    path, _ = export_and_check(model, out, config, source=source, dataset=dataset, lam=lam, check=check,
                               threads=threads, traced=traced)
    return path


__all__ = [
    "FORMATS",
    "PRECISIONS",
    "SCAN_FLAVOURS",
    "ExportConfig",
    "TracedOnnx",
    "WeightsOrigin",
    "count_scan_calls",
    "export_and_check",
    "export_copy",
    "export_onnx",
    "load_source_model",
    "to_onnx",
    "trace_onnx",
]
