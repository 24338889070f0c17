"""What an exported model says about itself: stored in the ONNX ``metadata_props`` and in a sidecar ``<out>.json``.

Written by the export layer (``m2s2l_edge.export``), read by every runtime backend; it lives here, below both, so that
neither imports the other.

Every backend runs an exported model from this alone, without its checkpoint: the model config (clip length,
resolution, channels), the input normalisation, the score weight λ, the scan flavour and the precision. The sidecar
carries the same record for artefacts that have no ONNX metadata (a TensorRT engine built from the ONNX writes
``<engine>.json`` with the same schema), and for readers that do not want to parse a protobuf.

ONNX metadata keys: ``m2s2l_edge`` holds the whole record as JSON (what ``read_metadata`` reads back); a few flat keys
(``preset``, ``clip_len``, ``image_size``, ``normalization``, ``lambda``, ``dataset``, ``scan``, ``precision``,
``batch``) repeat the fields people look for in Netron or ``onnx.load(...).metadata_props``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from m2s2l_edge.config import ModelConfig

logger = logging.getLogger(__name__)

FORMAT = "m2s2l-edge-export/1"
METADATA_KEY = "m2s2l_edge"
NORMALIZATION = "[-1, 1]"  # frames x/127.5 - 1, RGB, (B, T, 3, H, W)
INPUT_NAME = "clip"
OUTPUT_NAMES = ("frame_pred", "motion_pred")
_FLAT_KEYS = ("preset", "clip_len", "image_size", "normalization", "lambda", "dataset", "scan", "precision", "batch")


def library_versions() -> dict[str, str]:
    """Versions of the libraries an export depends on (only those installed)."""
    import importlib.metadata as md

    import m2s2l_edge

    versions = {"m2s2l_edge": m2s2l_edge.__version__}
    for pkg in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class ExportMetadata:
    """The record written beside every exported model. ``batch`` is an int, or "dynamic"."""

    config: dict
    scan: str  # "plugin" | "portable" (exports); "torch" for the PyTorch backend
    precision: str  # "fp32" | "fp16" | "int8" (a Q/DQ graph: export --int8)
    batch: int | str
    lam: float
    lambda_source: str
    dataset: str | None = None
    opset: int | None = None
    scan_calls: int | None = None
    rewrites: dict = field(default_factory=dict)  # inference rewrites traced into the graph (optimize_for_inference)
    weights: str = ""  # where the weights came from: "checkpoint <name> (epoch N)" or "preset <name>, seed N"
    weights_sha256: str = ""  # artifacts.checkpoint.weights_digest of the source weights ("" in older exports)
    normal_change: float | None = None  # median frame change of the training footage (the score's motion term)
    # INT8 only: how it was quantized and calibrated (method, nodes kept in floating point, the footage's SHA-256)
    quantization: dict | None = None
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = OUTPUT_NAMES
    normalization: str = NORMALIZATION
    versions: dict = field(default_factory=dict)
    format: str = FORMAT

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)

    @property
    def preset(self) -> str:
        return self.config["name"]

    @property
    def clip_len(self) -> int:
        return self.config["clip_len"]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        """(B, T, 3, H, W) with "batch" for a dynamic batch."""
        cfg = self.config
        return (self.batch, cfg["clip_len"], cfg["in_channels"], cfg["image_size"], cfg["image_size"])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lambda"] = d.pop("lam")
        d["output_names"] = list(self.output_names)
        # Repeated at the top level for readers of the sidecar who want the essentials without the config.
        d.update(preset=self.preset, clip_len=self.clip_len, image_size=self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExportMetadata:
        if d.get("format") != FORMAT:
            raise ValueError(f"unsupported export metadata format {d.get('format')!r} (expected {FORMAT!r})")
        d = dict(d)
        d["lam"] = d.pop("lambda")
        for derived in ("preset", "clip_len", "image_size"):
            d.pop(derived, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            # Newer writers may add fields; reading them is not needed to run the model.
            logger.debug("ignoring unknown export metadata fields %s", sorted(unknown))
        d = {k: v for k, v in d.items() if k in known}
        d["output_names"] = tuple(d.get("output_names", OUTPUT_NAMES))
        meta = cls(**d)
        try:  # validate now: a bad config should fail at load, not at first run
            ModelConfig.from_dict(meta.config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"the exported model's config: {e}") from None
        return meta

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def flat_props(self) -> dict[str, str]:
        """The human-facing flat keys of the ONNX metadata (strings, as ONNX stores them)."""
        d = self.to_dict()
        return {k: ("" if d[k] is None else str(d[k])) for k in _FLAT_KEYS}


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The metadata JSON beside a model: ``model.onnx`` → ``model.onnx.json``, ``model.engine`` → ``model.engine.json``
    (the suffix kept, so that a ``.plan`` and an ``.engine`` of one model never share a sidecar)."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def attach(model, meta: ExportMetadata) -> None:
    """Write ``meta`` into an ONNX ModelProto's metadata_props (replacing earlier m2s2l keys)."""
    props = {**meta.flat_props(), METADATA_KEY: json.dumps(meta.to_dict(), sort_keys=True)}
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def from_onnx_props(props: dict[str, str], source: str) -> ExportMetadata:
    if METADATA_KEY not in props:
        raise ValueError(f"{source} has no m2s2l-edge metadata (key {METADATA_KEY!r}); was it exported by m2s2l-edge?")
    try:
        return ExportMetadata.from_dict(json.loads(props[METADATA_KEY]))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{source}: unreadable m2s2l-edge metadata ({type(e).__name__}: {e})") from None


def _from_sidecar(sidecar: Path) -> ExportMetadata:
    try:
        d = json.loads(sidecar.read_text(encoding="utf-8"))
        # An engine's JSON may carry this record nested under the ONNX key it was merged from.
        if isinstance(d, dict) and "format" not in d and METADATA_KEY in d:
            nested = d[METADATA_KEY]
            d = json.loads(nested) if isinstance(nested, str) else nested
        return ExportMetadata.from_dict(d)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{sidecar}: unreadable m2s2l-edge metadata ({type(e).__name__}: {e})") from None


def read_metadata(path: str | os.PathLike) -> ExportMetadata:
    """Read an exported model's metadata: from the ONNX file itself, else from its sidecar ``<path>.json``.

    Raises FileNotFoundError when neither exists, ValueError when what is there is not m2s2l-edge metadata.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    if path.is_file() and (path.suffix == ".onnx" or not sidecar.is_file()):
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf raises DecodeError, onnx raises its own types: both mean "not ONNX"
            raise ValueError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from None
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in props or not sidecar.is_file():
            return from_onnx_props(props, str(path))
    if sidecar.is_file():
        return _from_sidecar(sidecar)
    raise FileNotFoundError(f"model {path} does not exist")


def read_engine_metadata(engine_path: str | os.PathLike) -> dict:
    """The engine's JSON (``<engine>.json``): the export's record (``ExportMetadata``, validated) and the ``engine``
    section `m2s2l-edge build` adds. An engine built by trtexec can use its ONNX's ``<model>.onnx.json``."""
    sidecar = sidecar_path(engine_path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"engine {engine_path} has no metadata file {sidecar} (written by m2s2l-edge build; "
                                "for an engine built by trtexec, copy the ONNX's <model>.onnx.json there)")
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
        record = ExportMetadata.from_dict(raw).to_dict()
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{sidecar}: unreadable m2s2l-edge metadata ({type(e).__name__}: {e})") from None
    return {**record, "engine": raw.get("engine", {})}
