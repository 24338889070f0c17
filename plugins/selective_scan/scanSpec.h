// Identity of the SelectiveScan operator, shared with m2s2l_edge/ops/spec.py (a test checks both agree).
#pragma once

namespace m2s2l
{
constexpr char const* kSCAN_OP_NAME = "SelectiveScan";
constexpr char const* kSCAN_PLUGIN_VERSION = "1";
constexpr char const* kSCAN_PLUGIN_NAMESPACE = "m2s2l";
constexpr char const* kSCAN_ONNX_DOMAIN = "m2s2l";
// Fields the plugin creator exposes through getFieldNames(), in order.
constexpr char const* kSCAN_PLUGIN_FIELDS[] = {"delta_softplus"};
constexpr int kSCAN_NUM_PLUGIN_FIELDS = 1;
// Inputs in order: u, delta, A, B, C, D, delta_bias[, z]. Output: y.
constexpr int kSCAN_NUM_INPUTS_NO_Z = 7;
constexpr int kSCAN_NUM_INPUTS_WITH_Z = 8;
} // namespace m2s2l
