"""The files a model lives in, read and written one way by every stage: the training checkpoint (``checkpoint``),
the record an exported model carries (``metadata``: ONNX metadata, an engine's sidecar) and the facts of an exported
ONNX graph that the exporter and ONNX Runtime both read (``onnx_graph``).

Importing the package imports nothing heavy; torch and onnx are imported inside the functions that need them.
"""
