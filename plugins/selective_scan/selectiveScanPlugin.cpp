// SelectiveScan TensorRT plugin: shape and type rules, serialisation and the call into the CUDA launcher.
#include "selectiveScanPlugin.h"

#include "scanSpec.h"
#include "selectiveScanForward.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <sstream>
#include <string>

namespace m2s2l
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;

// Input positions, in the order of kSCAN_NUM_INPUTS_* (scanSpec.h).
constexpr int32_t kIN_U = 0;
constexpr int32_t kIN_DELTA = 1;
constexpr int32_t kIN_A = 2;
constexpr int32_t kIN_B = 3;
constexpr int32_t kIN_C = 4;
constexpr int32_t kIN_D = 5;
constexpr int32_t kIN_DELTA_BIAS = 6;
constexpr int32_t kIN_Z = 7;
constexpr int32_t kNB_OUTPUTS = 1;
// The kernel keeps the state of one (b, d) pair in registers; selectiveScanForward.h documents 1 <= N <= 256.
constexpr int64_t kMAX_DSTATE = 256;

static_assert(kSCAN_NUM_INPUTS_NO_Z == kIN_Z, "z must be the last, optional input");
static_assert(kSCAN_NUM_INPUTS_WITH_Z == kIN_Z + 1, "z must be the last, optional input");
static_assert(kSCAN_NUM_PLUGIN_FIELDS == 1, "update the creator and getFieldsToSerialize when fields change");
char const* const kFIELD_DELTA_SOFTPLUS = kSCAN_PLUGIN_FIELDS[0];

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

bool isValidInputCount(int32_t nbInputs)
{
    return nbInputs == kSCAN_NUM_INPUTS_NO_Z || nbInputs == kSCAN_NUM_INPUTS_WITH_Z;
}

bool isFloatInput(int32_t pos)
{
    return pos == kIN_A || pos == kIN_D || pos == kIN_DELTA_BIAS;
}

char const* inputName(int32_t pos)
{
    static char const* const kNAMES[] = {"u", "delta", "A", "B", "C", "D", "delta_bias", "z"};
    return (pos >= 0 && pos < kSCAN_NUM_INPUTS_WITH_Z) ? kNAMES[pos] : "?";
}

std::string dimsToString(Dims const& dims)
{
    std::ostringstream os;
    os << "(";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        os << (i > 0 ? ", " : "") << dims.d[i];
    }
    os << (dims.nbDims == 1 ? ",)" : ")");
    return os.str();
}

void logError(char const* where, std::string const& what) noexcept
{
    try
    {
        std::string const message = std::string{"m2s2l::SelectiveScan "} + where + ": " + what;
        logPluginMessage(ILogger::Severity::kERROR, message.c_str());
    }
    catch (...)
    {
        logPluginMessage(ILogger::Severity::kERROR, "m2s2l::SelectiveScan: error (message lost: out of memory)");
    }
}

void logException(char const* where) noexcept
{
    try
    {
        throw;
    }
    catch (std::exception const& e)
    {
        logError(where, e.what());
    }
    catch (...)
    {
        logError(where, "unknown exception");
    }
}

// Checks the input shapes against each other. A dimension of -1 (unknown at build time) matches anything. Returns an
// empty string when the shapes agree, else a message that names the offending input.
std::string checkShapes(Dims const* dims, int32_t nbInputs)
{
    std::ostringstream err;
    if (!isValidInputCount(nbInputs))
    {
        err << "expected " << kSCAN_NUM_INPUTS_NO_Z << " or " << kSCAN_NUM_INPUTS_WITH_Z
            << " inputs (u, delta, A, B, C, D, delta_bias[, z]), got " << nbInputs;
        return err.str();
    }
    int32_t const expectedRank[] = {3, 3, 2, 4, 4, 1, 1, 3};
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        if (dims[i].nbDims != expectedRank[i])
        {
            err << "input " << inputName(i) << " must have rank " << expectedRank[i] << ", got shape "
                << dimsToString(dims[i]);
            return err.str();
        }
    }
    auto const same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    Dims const& u = dims[kIN_U];
    int64_t const batch = u.d[0];
    int64_t const dim = u.d[1];
    int64_t const seqlen = u.d[2];
    int64_t const dstate = dims[kIN_A].d[1];
    int64_t const groups = dims[kIN_B].d[1];

    for (int32_t i : {kIN_DELTA, kIN_Z})
    {
        if (i < nbInputs && !(same(dims[i].d[0], batch) && same(dims[i].d[1], dim) && same(dims[i].d[2], seqlen)))
        {
            err << "input " << inputName(i) << " must have u's shape " << dimsToString(u) << ", got "
                << dimsToString(dims[i]);
            return err.str();
        }
    }
    if (!same(dims[kIN_A].d[0], dim))
    {
        err << "A must be (K*D, N) with K*D = " << dim << " (u's dim 1), got " << dimsToString(dims[kIN_A]);
        return err.str();
    }
    if (dstate == 0 || dstate > kMAX_DSTATE)
    {
        err << "state size N = A.shape[1] must be in [1, " << kMAX_DSTATE << "], got " << dstate;
        return err.str();
    }
    for (int32_t i : {kIN_B, kIN_C})
    {
        Dims const& x = dims[i];
        if (!(same(x.d[0], batch) && same(x.d[1], groups) && same(x.d[2], dstate) && same(x.d[3], seqlen)))
        {
            err << "input " << inputName(i) << " must be (B, K, N, L) = (" << batch << ", " << groups << ", " << dstate
                << ", " << seqlen << "), got " << dimsToString(x);
            return err.str();
        }
    }
    if (groups == 0 || (groups > 0 && dim >= 0 && dim % groups != 0))
    {
        err << "K = B.shape[1] = " << groups << " must divide K*D = " << dim;
        return err.str();
    }
    for (int32_t i : {kIN_D, kIN_DELTA_BIAS})
    {
        if (!same(dims[i].d[0], dim))
        {
            err << "input " << inputName(i) << " must be (K*D,) = (" << dim << ",), got " << dimsToString(dims[i]);
            return err.str();
        }
    }
    // The launcher takes int32 sizes.
    for (int64_t v : {batch, dim, seqlen, groups})
    {
        if (v > std::numeric_limits<int32_t>::max())
        {
            err << "dimension " << v << " does not fit the kernel's int32 sizes";
            return err.str();
        }
    }
    return {};
}

} // namespace

// ---------------------------------------------------------------------------------------------------------------------
// Logging

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    if (finder != nullptr)
    {
        gLoggerFinder.store(finder);
    }
}

void logPluginMessage(ILogger::Severity severity, char const* message) noexcept
{
    nvinfer1::ILoggerFinder* const finder = gLoggerFinder.load();
    // findLogger() must be called from the thread of the plugin method being run, which is this one.
    ILogger* const logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(severity, message);
    }
    else if (severity <= ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "[m2s2l] %s\n", message);
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// SelectiveScanPlugin

SelectiveScanPlugin::SelectiveScanPlugin(bool deltaSoftplus)
    : mDeltaSoftplus(deltaSoftplus ? 1 : 0)
    , mMetadata(std::string{kFIELD_DELTA_SOFTPLUS} + (deltaSoftplus ? "=1" : "=0"))
{
}

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mDeltaSoftplus(other.mDeltaSoftplus)
    , mNbInputs(other.mNbInputs)
    , mMetadata(other.mMetadata)
{
}

nvinfer1::IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    logError("getCapabilityInterface", "unknown capability type " + std::to_string(static_cast<int32_t>(type)));
    return nullptr;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new SelectiveScanPlugin(*this);
    }
    catch (...)
    {
        logException("clone");
    }
    return nullptr;
}

char const* SelectiveScanPlugin::getPluginName() const noexcept
{
    return kSCAN_OP_NAME;
}

char const* SelectiveScanPlugin::getPluginVersion() const noexcept
{
    return kSCAN_PLUGIN_VERSION;
}

char const* SelectiveScanPlugin::getPluginNamespace() const noexcept
{
    return kSCAN_PLUGIN_NAMESPACE;
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != kNB_OUTPUTS || !isValidInputCount(nbInputs))
        {
            logError("getOutputDataTypes", "expected 7 or 8 inputs and 1 output");
            return -1;
        }
        if (inputTypes[kIN_U] != DataType::kFLOAT && inputTypes[kIN_U] != DataType::kHALF)
        {
            logError("getOutputDataTypes", "u must be FP32 or FP16");
            return -1;
        }
        outputTypes[0] = inputTypes[kIN_U];
        return 0;
    }
    catch (...)
    {
        logException("getOutputDataTypes");
    }
    return -1;
}

int32_t SelectiveScanPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbOutputs != kNB_OUTPUTS || !isValidInputCount(nbInputs))
        {
            logError("getOutputShapes", "expected 7 or 8 inputs and 1 output");
            return -1;
        }
        // Catch rank and constant-size mismatches while the network is built rather than at enqueue time.
        Dims known[kSCAN_NUM_INPUTS_WITH_Z]{};
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            known[i].nbDims = inputs[i].nbDims;
            for (int32_t j = 0; j < inputs[i].nbDims && j < Dims::MAX_DIMS; ++j)
            {
                nvinfer1::IDimensionExpr const* e = inputs[i].d[j];
                known[i].d[j] = (e != nullptr && e->isConstant()) ? e->getConstantValue() : -1;
            }
        }
        std::string const problem = checkShapes(known, nbInputs);
        if (!problem.empty())
        {
            logError("getOutputShapes", problem);
            return -1;
        }
        // y has u's shape: (B, K*D, L).
        outputs[0] = inputs[kIN_U];
        return 0;
    }
    catch (...)
    {
        logException("getOutputShapes");
    }
    return -1;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        if (inOut == nullptr || !isValidInputCount(nbInputs) || nbOutputs != kNB_OUTPUTS || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        if (isFloatInput(pos))
        {
            // A, D and delta_bias are parameters: always FP32, whatever the activations are.
            return desc.type == DataType::kFLOAT;
        }
        if (pos == kIN_U)
        {
            return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        }
        // delta, B, C, z and y follow u (TensorRT asks in order, so inOut[0] is already fixed).
        return desc.type == inOut[kIN_U].desc.type;
    }
    catch (...)
    {
        logException("supportsFormatCombination");
    }
    return false;
}

int32_t SelectiveScanPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbOutputs != kNB_OUTPUTS || !isValidInputCount(nbInputs))
        {
            logError("configurePlugin", "expected 7 or 8 inputs and 1 output");
            return -1;
        }
        Dims dims[kSCAN_NUM_INPUTS_WITH_Z]{};
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i] = in[i].desc.dims;
        }
        std::string const problem = checkShapes(dims, nbInputs);
        if (!problem.empty())
        {
            logError("configurePlugin", problem);
            return -1;
        }
        mNbInputs = nbInputs;
        return 0;
    }
    catch (...)
    {
        logException("configurePlugin");
    }
    return -1;
}

size_t SelectiveScanPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /* inputs */,
    int32_t /* nbInputs */, nvinfer1::DynamicPluginTensorDesc const* /* outputs */,
    int32_t /* nbOutputs */) const noexcept
{
    // One pass over L with the state in registers: no scratch memory.
    return 0;
}

char const* SelectiveScanPlugin::getMetadataString() noexcept
{
    // Shown by the engine inspector and in verbose build logs.
    return mMetadata.c_str();
}

int32_t SelectiveScanPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbOutputs != kNB_OUTPUTS || !isValidInputCount(nbInputs))
        {
            logError("onShapeChange", "expected 7 or 8 inputs and 1 output");
            return -1;
        }
        Dims dims[kSCAN_NUM_INPUTS_WITH_Z]{};
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims[i] = in[i].dims;
        }
        std::string const problem = checkShapes(dims, nbInputs);
        if (!problem.empty())
        {
            logError("onShapeChange", problem);
            return -1;
        }
        mNbInputs = nbInputs;
        return 0;
    }
    catch (...)
    {
        logException("onShapeChange");
    }
    return -1;
}

int32_t SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    void* /* workspace */, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError("enqueue", "null tensor descriptors or pointers");
            return -1;
        }
        if (!isValidInputCount(mNbInputs))
        {
            logError("enqueue", "called before configurePlugin/onShapeChange");
            return -1;
        }
        Dims const& u = inputDesc[kIN_U].dims;
        SelectiveScanParams params{};
        params.batch = static_cast<int32_t>(u.d[0]);
        params.dim = static_cast<int32_t>(u.d[1]);
        params.seqlen = static_cast<int32_t>(u.d[2]);
        params.dstate = static_cast<int32_t>(inputDesc[kIN_A].dims.d[1]);
        // K is not an attribute: the temporal blocks use K = 1 and SS2D K = 4, and B's shape tells which.
        params.groups = static_cast<int32_t>(inputDesc[kIN_B].dims.d[1]);
        params.deltaSoftplus = mDeltaSoftplus != 0;
        switch (inputDesc[kIN_U].type)
        {
        case DataType::kFLOAT: params.ioDtype = ScanDType::kFLOAT32; break;
        case DataType::kHALF: params.ioDtype = ScanDType::kFLOAT16; break;
        default: logError("enqueue", "u must be FP32 or FP16"); return -1;
        }
        if (params.batch == 0 || params.dim == 0 || params.seqlen == 0)
        {
            return 0; // empty tensor: nothing to compute
        }
        params.u = inputs[kIN_U];
        params.delta = inputs[kIN_DELTA];
        params.A = static_cast<float const*>(inputs[kIN_A]);
        params.B = inputs[kIN_B];
        params.C = inputs[kIN_C];
        params.D = static_cast<float const*>(inputs[kIN_D]);
        params.deltaBias = static_cast<float const*>(inputs[kIN_DELTA_BIAS]);
        params.z = mNbInputs == kSCAN_NUM_INPUTS_WITH_Z ? inputs[kIN_Z] : nullptr;
        params.y = outputs[0];

        cudaError_t const status = selectiveScanForward(params, stream);
        if (status != cudaSuccess)
        {
            logError("enqueue", std::string{"kernel launch failed: "} + cudaGetErrorName(status) + " ("
                    + cudaGetErrorString(status) + ")");
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        logException("enqueue");
    }
    return -1;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    // No per-context resources (no workspace, no cuBLAS handle): a plain copy serves every execution context.
    return clone();
}

nvinfer1::PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back(kFIELD_DELTA_SOFTPLUS, &mDeltaSoftplus, PluginFieldType::kINT32, 1);
        mFieldCollectionToSerialize.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFieldCollectionToSerialize.fields = mFieldsToSerialize.data();
        return &mFieldCollectionToSerialize;
    }
    catch (...)
    {
        logException("getFieldsToSerialize");
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------------
// SelectiveScanPluginCreator

SelectiveScanPluginCreator::SelectiveScanPluginCreator()
{
    // The ONNX parser passes a node's attributes only if they are listed here, converting ONNX INT to kINT32.
    mFieldNames.emplace_back(kFIELD_DELTA_SOFTPLUS, nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* SelectiveScanPluginCreator::getPluginName() const noexcept
{
    return kSCAN_OP_NAME;
}

char const* SelectiveScanPluginCreator::getPluginVersion() const noexcept
{
    return kSCAN_PLUGIN_VERSION;
}

char const* SelectiveScanPluginCreator::getPluginNamespace() const noexcept
{
    return kSCAN_PLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /* phase */) noexcept
{
    try
    {
        // mamba-ssm's selective_scan_fn defaults to delta_softplus=False; our exporter always writes the attribute,
        // and the parser warns when a node lacks it.
        int64_t deltaSoftplus = 0;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr || std::strcmp(field.name, kFIELD_DELTA_SOFTPLUS) != 0)
            {
                std::string const unknown = field.name != nullptr ? field.name : "<null>";
                logPluginMessage(ILogger::Severity::kWARNING,
                    ("m2s2l::SelectiveScan createPlugin: ignoring unknown field '" + unknown + "'").c_str());
                continue;
            }
            if (field.data == nullptr || field.length < 1)
            {
                logError("createPlugin", std::string{kFIELD_DELTA_SOFTPLUS} + " has no value");
                return nullptr;
            }
            switch (field.type)
            {
            case PluginFieldType::kINT32: deltaSoftplus = *static_cast<int32_t const*>(field.data); break;
            case PluginFieldType::kINT64: deltaSoftplus = *static_cast<int64_t const*>(field.data); break;
            case PluginFieldType::kINT16: deltaSoftplus = *static_cast<int16_t const*>(field.data); break;
            case PluginFieldType::kINT8: deltaSoftplus = *static_cast<int8_t const*>(field.data); break;
            default:
                logError("createPlugin",
                    std::string{kFIELD_DELTA_SOFTPLUS} + " must be an integer field (kINT32), got PluginFieldType "
                        + std::to_string(static_cast<int32_t>(field.type)));
                return nullptr;
            }
        }
        if (deltaSoftplus != 0 && deltaSoftplus != 1)
        {
            logError("createPlugin",
                std::string{kFIELD_DELTA_SOFTPLUS} + " must be 0 or 1, got " + std::to_string(deltaSoftplus)
                    + " (node '" + (name != nullptr ? name : "") + "')");
            return nullptr;
        }
        return new SelectiveScanPlugin(deltaSoftplus == 1);
    }
    catch (...)
    {
        logException("createPlugin");
    }
    return nullptr;
}

} // namespace m2s2l
