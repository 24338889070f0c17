"""What the runtime backends and the export layer share, kept below both so that neither imports the other.

Dependencies point one way: ops ← layers ← models ← deploy ← export / runtime ← CLI. This package holds the pieces
both sides need, each defined once:

- ``metadata``: the record an exported model carries (``ExportMetadata``), its sidecar path and its readers;
- ``tensorrt_lib``: importing TensorRT, reading its version, finding and loading the SelectiveScan plugin library;
- ``ort_session``: the ONNX Runtime session of an exported model (providers, threads, optimisation level);
- ``ort_scan``: SelectiveScan nodes run in ONNX Runtime as Python custom ops;
- ``onnx_graph``: graph facts both the exporter and the ONNX Runtime rewrite read (scan nodes, value types, shapes);
- ``KINDS``: the backend kinds a model can run on.

Importing the package (or ``KINDS``) imports nothing heavy; each module imports onnx, onnxruntime or tensorrt inside
the functions that need them.
"""

# One name per runtime backend, in the order the CLI lists them: torch (a checkpoint or a preset), onnxruntime (an
# exported ONNX), tensorrt (a serialized engine).
KINDS = ("torch", "onnxruntime", "tensorrt")
