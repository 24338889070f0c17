"""INT8 by explicit quantization: a Q/DQ ONNX calibrated on normal footage (``m2s2l-edge export --int8``).

TensorRT 10.1 deprecated implicit INT8 calibration and 11 removes it; an ONNX with QuantizeLinear / DequantizeLinear
pairs is the route both take, and ONNX Runtime runs the same graph on a CPU (fusing DQ → Conv → Q into integer
kernels). What is quantized (docs/DESIGN.md §7, "INT8"):

- the convolutions and linear layers (``Conv``, ``MatMul``, ``Gemm``): weights per output channel, activations per
  tensor, both symmetric int8 (zero point 0, what TensorRT requires);
- except the ones whose output reaches a selective scan's input through no other convolution or linear layer (the
  Mamba mixers' in_proj, depth-wise convolution, x_proj and dt_proj): the scan and its inputs u, Δ, B, C, z stay in
  floating point, as the published Mamba quantization work advises (Quamba, MambaQuant, PTQ4VM: the scan's inputs
  and its recurrence are where naive W8A8 loses accuracy). A scan input that a quantized node also reads is rewired
  to the float tensor, so no scan input ever comes out of a DequantizeLinear.

Calibration: clips of the given normal footage (``calibration_clips``: evenly spread over its frames, preprocessed as
``eval`` does), run through the FP32 model in ONNX Runtime (our native op for SelectiveScan nodes: ONNX Runtime's own
calibrator cannot open a graph with a custom-domain node, onnxruntime#23191); the range of each tensor is its largest
magnitude over all clips (``minmax``). The Q/DQ nodes themselves are placed by ONNX Runtime's QDQ quantizer from those
ranges. The calibration method, the nodes kept in floating point and the footage's SHA-256 go into the model's
metadata (``quantization``), so the model's identity says it is INT8 and what it was calibrated on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2s2l_edge.artifacts.onnx_graph import is_scan_node

logger = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax",)
DEFAULT_CALIBRATION_CLIPS = 64
# Node types TensorRT's ONNX parser cannot take in a Q/DQ graph (dynamic quantization, ONNX Runtime's integer
# operators): an INT8 export must contain none of them.
TENSORRT_REFUSED_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
                        "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
                        "QLinearAveragePool", "QLinearGlobalAveragePool", "DynamicQuantizeMatMul",
                        "MatMulIntegerToFloat")
_PORTABLE_SCAN_PREFIX = "portable_scan_"


@dataclass(frozen=True)
class CalibrationData:
    """Calibration clips (N, T+1, 3, H, W) float32 in [-1, 1] (T past frames and the frame they predict) and what
    they came from."""

    clips: np.ndarray
    source: str
    sha256: str  # of the footage's files (names and bytes), so a model says which footage calibrated it
    frames: int


def footage_sha256(paths: list[Path], root: Path) -> str:
    """SHA-256 over the footage files' paths (relative to ``root``) and bytes, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(paths):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        h.update(str(rel).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def calibration_clips(footage: str | os.PathLike, clip_len: int, image_size: int,
                      count: int = DEFAULT_CALIBRATION_CLIPS) -> CalibrationData:
    """Up to ``count`` clips of T + 1 frames (T = ``clip_len`` and the target) from ``footage`` (a video file, a
    frames folder, a folder of videos, or a data set's training split), their starts evenly spread over every
    video's frames.

    Raises FileNotFoundError / ValueError for footage that cannot be read or is shorter than one clip.
    """
    from m2s2l_edge.data.clips import preprocess_frame
    from m2s2l_edge.data.layouts import discover
    from m2s2l_edge.data.sources import FrameFolderSource, list_frame_files

    if count < 1:
        raise ValueError(f"calibration clip count must be >= 1, got {count}")
    root = Path(footage).expanduser()
    videos = discover(root, "custom", "train")
    starts = [(v, s) for v in videos for s in range(max(0, len(v) - clip_len))]
    if not starts:
        raise ValueError(f"calibration footage {root} has no video of more than {clip_len} frames")
    picks = [starts[i] for i in np.unique(np.linspace(0, len(starts) - 1, min(count, len(starts))).round().astype(int))]
    clips = np.stack([
        np.stack([preprocess_frame(video.read(s + t), image_size) for t in range(clip_len + 1)])  # (T+1, 3, H, W)
        for video, s in picks
    ]).astype(np.float32)  # (N, T+1, 3, H, W)
    for video in videos:
        video.close()
    files: list[Path] = []
    for video in videos:
        files.extend(list_frame_files(video.path) if isinstance(video, FrameFolderSource) else [video.path])
    return CalibrationData(clips, str(root), footage_sha256(files, root), sum(len(v) for v in videos))


def _producers(model) -> dict[str, object]:
    return {out: node for node in model.graph.node for out in node.output if out}


def scan_inputs(model) -> set[str]:
    """The tensors the selective scans read: a plugin-flavour graph's SelectiveScan inputs, or the tensors a portable
    graph's lowered scans (nodes named ``portable_scan_*``) take from the rest of the graph."""
    inputs: set[str] = set()
    producers = _producers(model)
    for node in model.graph.node:
        if is_scan_node(node):
            inputs.update(i for i in node.input if i)
        elif node.name.startswith(_PORTABLE_SCAN_PREFIX):
            for name in node.input:
                src = producers.get(name)
                if name and (src is None or not src.name.startswith(_PORTABLE_SCAN_PREFIX)):
                    inputs.add(name)
    initializers = {i.name for i in model.graph.initializer}
    return inputs - initializers


def scan_feeding_nodes(model) -> list[str]:
    """Names of the Conv / MatMul / Gemm nodes whose output reaches a scan input through no other such node: what
    stays in floating point so that the scans' inputs do."""
    producers = _producers(model)
    found: list[str] = []
    seen: set[str] = set()
    stack = list(scan_inputs(model))
    while stack:
        tensor = stack.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen or is_scan_node(node):
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZED_OP_TYPES:
            found.append(node.name)
            continue
        stack.extend(i for i in node.input if i)
    return sorted(found)


def _calibration_ranges(fp32_path: Path, tensors: list[str], clips: np.ndarray, threads: int | None) -> dict:
    """max |x| of each tensor over the calibration clips, run in ONNX Runtime as deployment opens the model."""
    import tempfile

    import onnx

    from m2s2l_edge.runtime.ort_session import open_session

    model = onnx.load(str(fp32_path))
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    with tempfile.TemporaryDirectory(prefix="m2s2l_calib_") as tmp:
        augmented = Path(tmp) / "calibration.onnx"
        onnx.save(model, str(augmented))
        opened = open_session(augmented, threads=threads)
        session = opened.session
        (clip_input,) = session.get_inputs()
        fixed = clip_input.shape[0] if isinstance(clip_input.shape[0], int) else None
        step = fixed or 1
        peak = dict.fromkeys(tensors, 0.0)
        inputs = clips[:, :-1]  # (N, T, 3, H, W): the target frame is not a model input
        for start in range(0, len(inputs), step):
            batch = inputs[start:start + step]
            if len(batch) < step:  # a fixed-batch model: pad with the last clip, which changes no maximum
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), axis=0)])
            values = session.run(tensors, {clip_input.name: batch})
            for name, value in zip(tensors, values, strict=True):
                peak[name] = max(peak[name], float(np.abs(value).max()) if value.size else 0.0)
    return peak


def _rewire_scan_inputs(model) -> int:
    """Point every scan input that comes out of DequantizeLinear(QuantizeLinear(x)) back to x; returns the count."""
    producers = _producers(model)
    consumers = [n for n in model.graph.node if is_scan_node(n) or n.name.startswith(_PORTABLE_SCAN_PREFIX)]
    rewired = 0
    for node in consumers:
        for j, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[j] = q.input[0]
                rewired += 1
    if rewired:
        _remove_dead_nodes(model)
    return rewired


def _remove_dead_nodes(model) -> None:
    graph = model.graph
    while True:
        used = {o.name for o in graph.output}
        for node in graph.node:
            used.update(node.input)
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def check_qdq_graph(model) -> None:
    """Raise ValueError unless ``model`` is an explicit-quantization graph TensorRT's ONNX parser takes: Q/DQ pairs
    of int8 with zero point 0, none of ONNX Runtime's integer or dynamic-quantization operators, and no scan input
    out of a DequantizeLinear."""
    import onnx

    refused = sorted({n.op_type for n in model.graph.node if n.op_type in TENSORRT_REFUSED_OPS})
    if refused:
        raise ValueError(f"the INT8 graph holds operators TensorRT cannot parse: {', '.join(refused)}")
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        raise ValueError("the INT8 graph has no QuantizeLinear / DequantizeLinear node")
    for node in qdq:
        if len(node.input) < 3 or node.input[2] not in inits:
            raise ValueError(f"{node.op_type} {node.name!r} has no constant zero point (TensorRT needs one)")
        zero = onnx.numpy_helper.to_array(inits[node.input[2]])
        if zero.dtype != np.int8 or np.any(zero != 0):
            raise ValueError(f"{node.op_type} {node.name!r}: zero point {zero.dtype} {zero.ravel()[:4]}; TensorRT "
                             "takes symmetric int8 (zero point 0) only")
    producers = _producers(model)
    fed = sorted(name for name in scan_inputs(model)
                 if producers.get(name) is not None and producers[name].op_type == "DequantizeLinear")
    if fed:
        raise ValueError(f"scan inputs come out of DequantizeLinear: {', '.join(fed[:5])}")


def quantize_model(fp32_path: str | os.PathLike, calibration: CalibrationData, *, method: str = "minmax",
                   threads: int | None = None, op_types: tuple[str, ...] = QUANTIZED_OP_TYPES):
    """The Q/DQ ModelProto of the FP32 export at ``fp32_path`` and the ``quantization`` metadata record."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    fp32_path = Path(fp32_path)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)), strict_mode=False)
    kept_float = scan_feeding_nodes(model)
    nodes = [n for n in model.graph.node
             if n.op_type in op_types and n.name not in kept_float
             and not n.name.startswith(_PORTABLE_SCAN_PREFIX)]
    if any(not n.name for n in nodes):
        raise ValueError(f"{fp32_path}: unnamed nodes; the quantizer needs node names")
    initializers = {i.name for i in model.graph.initializer}
    tensors = sorted({t for n in nodes for t in (*n.input[:1], *n.output[:1]) if t and t not in initializers})
    logger.info("INT8: calibrating %d tensors of %d nodes on %d clips from %s", len(tensors), len(nodes),
                len(calibration.clips), calibration.source)
    peaks = _calibration_ranges(fp32_path, tensors, calibration.clips, threads)
    ranges = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(-peak, dtype=np.float32), highest=np.array(peak, dtype=np.float32))
        for name, peak in peaks.items()})
    quantizer = QDQQuantizer(
        model, True, False, QuantType.QInt8, QuantType.QInt8, ranges, [n.name for n in nodes], kept_float,
        list(op_types),
        # Biases stay float: TensorRT takes int8 Q/DQ only (an int32 bias DequantizeLinear is ONNX Runtime's form).
        {"ActivationSymmetric": True, "WeightSymmetric": True, "DedicatedQDQPair": False, "QuantizeBias": False},
    )
    quantizer.quantize_model()
    rewired = _rewire_scan_inputs(quantizer.model.model)
    quantizer.model.topological_sort()  # the quantizer appends its Q/DQ nodes at the end of the node list
    out = quantizer.model.model
    check_qdq_graph(out)
    record = {
        "method": "minmax: activations per tensor, weights per output channel, symmetric int8 (zero point 0), "
                  "Q/DQ placed by onnxruntime's QDQ quantizer",
        "calibration_method": method,
        "quantized_op_types": list(op_types),
        "quantized_nodes": len(nodes),
        "excluded_nodes": kept_float,
        "excluded_because": "their outputs feed the selective scans' inputs (scan and inputs kept in floating point)",
        "scan_inputs_rewired": rewired,
        "calibration_data": {"source": calibration.source, "sha256": calibration.sha256,
                             "clips": int(len(calibration.clips)), "frames": calibration.frames},
    }
    return out, record


def _run_all(session, clips: np.ndarray) -> dict[str, np.ndarray]:
    """frame_pred and motion_pred of every clip's T past frames, in the model's (fixed or dynamic) batch."""
    (clip_input,) = session.get_inputs()
    fixed = clip_input.shape[0] if isinstance(clip_input.shape[0], int) else None
    step = fixed or 1
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list] = {n: [] for n in names}
    inputs = clips[:, :-1]
    for start in range(0, len(inputs), step):
        batch = inputs[start:start + step]
        n = len(batch)
        if n < step:
            batch = np.concatenate([batch, np.repeat(batch[-1:], step - n, axis=0)])
        for name, value in zip(names, session.run(names, {clip_input.name: batch}), strict=True):
            parts[name].append(np.asarray(value, dtype=np.float32)[:n])
    return {n: np.concatenate(v) for n, v in parts.items()}


def compare_with_fp32(int8_path: str | os.PathLike, fp32_path: str | os.PathLike, clips: np.ndarray,
                      threads: int | None = None) -> dict:
    """What quantization changes, on ``clips`` (N, T+1, ...): the PSNR of the INT8 frame prediction against the FP32
    one (dB; higher = closer), and the change of each clip's PSNR_app, PSNR_mot and fused score (dB; the anomaly
    score's inputs, with the published score's λ the FP32 export records), as mean and largest absolute
    differences."""
    import torch

    from m2s2l_edge.export.parity import _scores
    from m2s2l_edge.runtime.ort_session import open_session
    from m2s2l_edge.scoring.model import model_scoring
    from m2s2l_edge.scoring.terms import psnr

    fp32 = open_session(fp32_path, threads=threads)
    got = _run_all(open_session(int8_path, threads=threads).session, clips)
    want = _run_all(fp32.session, clips)
    inputs, targets = clips[:, :-1], clips[:, -1]
    scoring = model_scoring(fp32.meta.to_dict(), (inputs.shape[1], tuple(inputs.shape[-2:])), score="paper")
    got.update(_scores(got["frame_pred"], got["motion_pred"], inputs, targets, scoring))
    want.update(_scores(want["frame_pred"], want["motion_pred"], inputs, targets, scoring))
    agreement = psnr(torch.from_numpy(got["frame_pred"]), torch.from_numpy(want["frame_pred"])).numpy()
    result = {"clips": int(len(clips)), "frame_pred_psnr_vs_fp32_db": {"mean": float(agreement.mean()),
                                                                        "min": float(agreement.min())}}
    for quantity in ("psnr_app", "psnr_mot", "score"):
        delta = np.abs(got[quantity] - want[quantity])
        result[f"{quantity}_change_db"] = {"mean": float(delta.mean()), "max": float(delta.max())}
    return result


def export_int8(model, out: str | os.PathLike, config, calibration: CalibrationData, *, source=None,
                dataset: str | None = None, lam: float | None = None, check: bool = True,
                threads: int | None = None, traced=None):
    """Export ``model`` in FP32 (``config``, checked against PyTorch when ``check``), quantize it on
    ``calibration`` and publish the Q/DQ model at ``out`` with its metadata (precision "int8", ``quantization``).
    Returns (path, the FP32 ParityReport or None, ``compare_with_fp32`` on the calibration clips)."""
    import dataclasses
    import tempfile

    import onnx

    from m2s2l_edge.artifacts import metadata as meta_mod
    from m2s2l_edge.export.onnx_export import _published, export_and_check

    if config.precision != "fp32":
        raise ValueError("--int8 quantizes an FP32 export: drop --fp16 (TensorRT runs the layers left in floating "
                         "point in FP16 where its builder allows)")
    from m2s2l_edge.export.outputs import check_onnx_output

    out = check_onnx_output(out)
    sidecar = meta_mod.sidecar_path(out)
    with tempfile.TemporaryDirectory(prefix="m2s2l_int8_") as tmp, _published(out, sidecar) as (tmp_model,
                                                                                                tmp_sidecar):
        fp32_path, report = export_and_check(model, Path(tmp) / "fp32.onnx", config, source=source, dataset=dataset,
                                             lam=lam, check=check, threads=threads, traced=traced)
        proto, record = quantize_model(fp32_path, calibration, threads=threads)
        meta = dataclasses.replace(meta_mod.read_metadata(fp32_path), precision="int8", quantization=record)
        meta_mod.attach(proto, meta)
        proto.doc_string = f"M2S2L '{model.cfg.name}' INT8 (Q/DQ) exported by m2s2l-edge ({config.scan} scan)"
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(tmp_model))
        tmp_sidecar.write_text(meta.to_json() + "\n", encoding="utf-8")
        for path in (tmp_model, tmp_sidecar):
            os.chmod(path, 0o644)
        comparison = compare_with_fp32(tmp_model, fp32_path, calibration.clips, threads)
        logger.info("wrote %s (INT8; frame_pred %.1f dB from FP32 on the calibration clips)", out,
                    comparison["frame_pred_psnr_vs_fp32_db"]["mean"])
    return out, report, comparison
