"""The SelectiveScan operator's identity, shared by the ONNX export and the TensorRT plugin.

The C++ side defines the same values in ``plugins/selective_scan/scanSpec.h``; ``tests/test_scan_spec.py`` checks
that both agree. TensorRT's ONNX parser maps an unknown node to the plugin creator whose name equals the node's
``op_type`` and whose version and namespace equal the node's ``plugin_version`` / ``plugin_namespace`` attributes;
TensorRT 10.3 does not derive the namespace from the ONNX domain, so the export writes it explicitly.
"""

OP_NAME = "SelectiveScan"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "m2s2l"
ONNX_DOMAIN = "m2s2l"
ONNX_DOMAIN_VERSION = 1

# Attributes the plugin creator lists in getFieldNames(); the parser passes only these to the plugin.
PLUGIN_FIELDS = ("delta_softplus",)

# Input order of the node (and of the plugin): optional inputs are always present in the plugin flavour; an absent
# z is exported as the gate-free variant by attribute ``has_z`` being implied by the number of inputs.
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias", "z")
OUTPUT_NAMES = ("y",)
