"""Serving our exports with standard inference servers (NVIDIA Triton Inference Server).

``triton_repo.write_repository`` turns an exported ONNX (and optionally a TensorRT engine built from it) into a Triton
model repository; the client side is the runtime backend ``m2s2l_edge.runtime.triton_backend``. Importing this package
imports neither onnx, torch nor tritonclient.
"""
