// TensorRT plugin for the SelectiveScan ONNX node (mamba-ssm selective_scan_fn forward, docs/DESIGN.md §4-5).
//
// Inputs (in order)                                            Output
//   0 u          (B, K*D, L)   FP32 | FP16                       0 y  (B, K*D, L)  same dtype as u
//   1 delta      (B, K*D, L)   same dtype as u
//   2 A          (K*D, N)      FP32
//   3 B          (B, K, N, L)  same dtype as u
//   4 C          (B, K, N, L)  same dtype as u
//   5 D          (K*D,)        FP32
//   6 delta_bias (K*D,)        FP32
//   7 z          (B, K*D, L)   same dtype as u   (optional: 7 or 8 inputs)
// Field (= ONNX attribute): delta_softplus, int32, 0 or 1.
// All tensors are linear (row-major, contiguous). K is read from B's second dimension at enqueue time.
//
// The plugin implements IPluginV3 with the IPluginV3OneCore / IPluginV3OneBuild / IPluginV3OneRuntime capabilities;
// the kernel's entry point is selectiveScanForward.h/.cu, which knows nothing of TensorRT. Every noexcept entry point
// catches and reports through the logger found by setLoggerFinder(): no C++ exception crosses into TensorRT.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace m2s2l
{

class SelectiveScanPlugin : public nvinfer1::IPluginV3,
                            public nvinfer1::IPluginV3OneCore,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit SelectiveScanPlugin(bool deltaSoftplus);
    SelectiveScanPlugin(SelectiveScanPlugin const& other);
    SelectiveScanPlugin& operator=(SelectiveScanPlugin const&) = delete;
    ~SelectiveScanPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    // Serialised state: exactly the ONNX attributes (int32 so that getFieldsToSerialize can point at it).
    int32_t mDeltaSoftplus;
    // Not serialised: enqueue() receives no input count, so configurePlugin/onShapeChange record whether z is there.
    int32_t mNbInputs{0};
    // getMetadataString(): "delta_softplus=<0|1>".
    std::string mMetadata;

    // Backing storage for getFieldsToSerialize(); rebuilt on every call so that copies never point into another
    // object.
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFieldCollectionToSerialize{};
};

class SelectiveScanPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SelectiveScanPluginCreator();
    ~SelectiveScanPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

// Logging shared by the plugin, its creator and the library entry points. TensorRT hands the library an
// ILoggerFinder through the exported setLoggerFinder(); without one (a library loaded by plain dlopen), errors and
// warnings go to stderr so that they are never lost.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* message) noexcept;

} // namespace m2s2l
