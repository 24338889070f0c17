"""m2s2l-edge: the M²S²L video anomaly detector, from PyTorch training to TensorRT inference on edge GPUs.

Importing this package is cheap: it pulls in neither torch's heavy extras, nor onnx, nor tensorrt.
"""

__version__ = "0.1.0"
