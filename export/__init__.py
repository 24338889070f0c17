"""The export layer, installed as ``m2s2l_edge.export``: ONNX export (``onnx_export``), the SelectiveScan node and its
standard-ONNX lowering (``scan_onnx``), the parity check (``parity``) and the TensorRT engine build (``engine``).
What it shares with the runtime backends (the model metadata record, TensorRT and ONNX Runtime helpers) lives below
both in ``m2s2l_edge.runtime``; this package never imports ``m2s2l_edge.runtime``. Importing the package imports none
of them (nor onnx, torch or tensorrt); see README.md.
"""
