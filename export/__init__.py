"""The export layer, installed as ``m2s2l_edge.export``: ONNX export (``onnx_export``), the SelectiveScan node and its
standard-ONNX lowering (``scan_onnx``), export metadata (``metadata``), the parity check (``parity``) and the TensorRT
engine build (``engine``). Importing the package imports none of them (nor onnx, torch or tensorrt); see README.md.
"""
