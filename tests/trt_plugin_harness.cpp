// Drives the SelectiveScan plugin through TensorRT's plugin interfaces without TensorRT: the plugin sources are
// compiled against TensorRT's public headers and linked with a recording stand-in for the CUDA launcher, so that
// the field parsing, type and shape rules, serialisation and the parameters handed to the kernel are checked on a
// CPU-only machine. tests/test_trt_plugin_source.py builds and runs it; it prints one line per failed check and
// exits non-zero if any failed.
#include "scanSpec.h"
#include "selectiveScanForward.h"
#include "selectiveScanPlugin.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept;

namespace m2s2l
{
// Stand-in for the launcher in selectiveScanForward.cu: records what the plugin passes.
SelectiveScanParams gLastParams{};
int32_t gLaunches = 0;
cudaError_t gLaunchResult = cudaSuccess;

cudaError_t selectiveScanForward(SelectiveScanParams const& params, cudaStream_t /* stream */)
{
    gLastParams = params;
    ++gLaunches;
    return gLaunchResult;
}
} // namespace m2s2l

namespace
{

using nvinfer1::DataType;
using nvinfer1::PluginFieldType;

int32_t gFailures = 0;

void check(bool ok, char const* what, int line)
{
    if (!ok)
    {
        std::printf("FAIL line %d: %s\n", line, what);
        ++gFailures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

class RecordingLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            mMessages.emplace_back(msg);
        }
    }
    // True if a warning or error containing `text` was logged since the last call; forgets the messages.
    bool saw(char const* text)
    {
        bool found = false;
        for (auto const& m : mMessages)
        {
            found = found || m.find(text) != std::string::npos;
        }
        mMessages.clear();
        return found;
    }
    bool quiet()
    {
        bool const none = mMessages.empty();
        for (auto const& m : mMessages)
        {
            std::printf("unexpected log: %s\n", m.c_str());
        }
        mMessages.clear();
        return none;
    }

private:
    std::vector<std::string> mMessages;
};

class Finder : public nvinfer1::ILoggerFinder
{
public:
    explicit Finder(nvinfer1::ILogger* logger)
        : mLogger(logger)
    {
    }
    nvinfer1::ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    nvinfer1::ILogger* mLogger;
};

// IDimensionExpr / IExprBuilder are implemented inside libnvinfer; these stand-ins give getOutputShapes constants
// (value >= 0) or unknown sizes (value < 0).
class ExprValue : public nvinfer1::apiv::VDimensionExpr
{
public:
    explicit ExprValue(int64_t v)
        : mValue(v)
    {
    }
    bool isConstant() const override
    {
        return mValue >= 0;
    }
    int64_t getConstantValue() const override
    {
        return mValue;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    int64_t mValue;
};

class Expr : public nvinfer1::IDimensionExpr
{
public:
    explicit Expr(nvinfer1::apiv::VDimensionExpr* impl)
    {
        mImpl = impl;
    }
};

class NullExprBuilder : public nvinfer1::IExprBuilder
{
};

// Owns the expressions; a deque keeps their addresses stable and needs no copy or move (IDimensionExpr has none).
struct ExprPool
{
    std::deque<ExprValue> values;
    std::deque<Expr> exprs;
    nvinfer1::DimsExprs make(std::vector<int64_t> const& shape)
    {
        nvinfer1::DimsExprs d{};
        d.nbDims = static_cast<int32_t>(shape.size());
        for (size_t i = 0; i < shape.size(); ++i)
        {
            values.emplace_back(shape[i]);
            exprs.emplace_back(&values.back());
            d.d[i] = &exprs.back();
        }
        return d;
    }
};

nvinfer1::Dims dims(std::vector<int64_t> const& shape)
{
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i)
    {
        d.d[i] = shape[i];
    }
    return d;
}

// Shapes of the eight inputs for batch 2, K = 4 groups of D = 3 channels, N = 5, L = 7.
constexpr int64_t kB = 2, kK = 4, kDIM = 12, kN = 5, kL = 7;
std::vector<std::vector<int64_t>> goodShapes()
{
    return {{kB, kDIM, kL}, {kB, kDIM, kL}, {kDIM, kN}, {kB, kK, kN, kL}, {kB, kK, kN, kL}, {kDIM}, {kDIM},
        {kB, kDIM, kL}};
}

std::vector<nvinfer1::PluginTensorDesc> descs(std::vector<std::vector<int64_t>> const& shapes, DataType io)
{
    std::vector<nvinfer1::PluginTensorDesc> out;
    for (size_t i = 0; i < shapes.size(); ++i)
    {
        nvinfer1::PluginTensorDesc d{};
        d.dims = dims(shapes[i]);
        d.type = (i == 2 || i == 5 || i == 6) ? DataType::kFLOAT : io;
        d.format = nvinfer1::TensorFormat::kLINEAR;
        out.push_back(d);
    }
    return out;
}

nvinfer1::IPluginV3* makePlugin(nvinfer1::IPluginCreatorV3One& creator, int32_t deltaSoftplus)
{
    nvinfer1::PluginField field{m2s2l::kSCAN_PLUGIN_FIELDS[0], &deltaSoftplus, PluginFieldType::kINT32, 1};
    nvinfer1::PluginFieldCollection fc{1, &field};
    return creator.createPlugin("scan", &fc, nvinfer1::TensorRTPhase::kBUILD);
}

} // namespace

int main()
{
    RecordingLogger logger;
    Finder finder(&logger);
    setLoggerFinder(&finder);

    // --- library entry point and creator -----------------------------------------------------------------------
    int32_t nbCreators = -1;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    CHECK(nbCreators == 1 && creators != nullptr && creators[0] != nullptr);
    if (creators == nullptr || nbCreators != 1)
    {
        return 1;
    }
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto& creator = *static_cast<nvinfer1::IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator.getPluginName(), m2s2l::kSCAN_OP_NAME) == 0);
    CHECK(std::strcmp(creator.getPluginVersion(), m2s2l::kSCAN_PLUGIN_VERSION) == 0);
    CHECK(std::strcmp(creator.getPluginNamespace(), m2s2l::kSCAN_PLUGIN_NAMESPACE) == 0);
    nvinfer1::PluginFieldCollection const* names = creator.getFieldNames();
    CHECK(names != nullptr && names->nbFields == m2s2l::kSCAN_NUM_PLUGIN_FIELDS);
    CHECK(std::strcmp(names->fields[0].name, m2s2l::kSCAN_PLUGIN_FIELDS[0]) == 0);
    CHECK(names->fields[0].type == PluginFieldType::kINT32);

    // --- createPlugin field handling ---------------------------------------------------------------------------
    int32_t two = 2;
    nvinfer1::PluginField bad{m2s2l::kSCAN_PLUGIN_FIELDS[0], &two, PluginFieldType::kINT32, 1};
    nvinfer1::PluginFieldCollection badFc{1, &bad};
    CHECK(creator.createPlugin("scan", &badFc, nvinfer1::TensorRTPhase::kBUILD) == nullptr);
    CHECK(logger.saw("must be 0 or 1"));
    float one = 1.0F;
    nvinfer1::PluginField wrongType{m2s2l::kSCAN_PLUGIN_FIELDS[0], &one, PluginFieldType::kFLOAT32, 1};
    nvinfer1::PluginFieldCollection wrongTypeFc{1, &wrongType};
    CHECK(creator.createPlugin("scan", &wrongTypeFc, nvinfer1::TensorRTPhase::kBUILD) == nullptr);
    CHECK(logger.saw("integer field"));
    int64_t wideOne = 1;
    nvinfer1::PluginField wide{m2s2l::kSCAN_PLUGIN_FIELDS[0], &wideOne, PluginFieldType::kINT64, 1};
    nvinfer1::PluginFieldCollection wideFc{1, &wide};
    nvinfer1::IPluginV3* widePlugin = creator.createPlugin("scan", &wideFc, nvinfer1::TensorRTPhase::kBUILD);
    CHECK(widePlugin != nullptr);
    delete widePlugin;
    int32_t zero = 0;
    nvinfer1::PluginField unknown{"not_a_field", &zero, PluginFieldType::kINT32, 1};
    nvinfer1::PluginFieldCollection unknownFc{1, &unknown};
    nvinfer1::IPluginV3* defaults = creator.createPlugin("scan", &unknownFc, nvinfer1::TensorRTPhase::kBUILD);
    CHECK(defaults != nullptr && logger.saw("not_a_field"));
    if (defaults != nullptr)
    {
        auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
            defaults->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
        CHECK(std::strcmp(build->getMetadataString(), "delta_softplus=0") == 0); // selective_scan_fn's default
        delete defaults;
    }

    // --- capabilities, identity, serialisation round trip ------------------------------------------------------
    nvinfer1::IPluginV3* plugin = makePlugin(creator, 1);
    CHECK(plugin != nullptr);
    if (plugin == nullptr)
    {
        return 1;
    }
    auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    CHECK(core != nullptr && build != nullptr && runtime != nullptr);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(std::strcmp(core->getPluginName(), m2s2l::kSCAN_OP_NAME) == 0);
    CHECK(std::strcmp(core->getPluginVersion(), m2s2l::kSCAN_PLUGIN_VERSION) == 0);
    CHECK(std::strcmp(core->getPluginNamespace(), m2s2l::kSCAN_PLUGIN_NAMESPACE) == 0);
    CHECK(plugin->getCapabilityInterface(static_cast<nvinfer1::PluginCapabilityType>(42)) == nullptr);
    CHECK(logger.saw("unknown capability"));

    nvinfer1::PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    CHECK(saved != nullptr && saved->nbFields == 1);
    CHECK(std::strcmp(saved->fields[0].name, m2s2l::kSCAN_PLUGIN_FIELDS[0]) == 0);
    CHECK(saved->fields[0].type == PluginFieldType::kINT32 && saved->fields[0].length == 1);
    CHECK(*static_cast<int32_t const*>(saved->fields[0].data) == 1);
    nvinfer1::IPluginV3* restored = creator.createPlugin("scan", saved, nvinfer1::TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    if (restored != nullptr)
    {
        auto* b = static_cast<nvinfer1::IPluginV3OneBuild*>(
            restored->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
        CHECK(std::strcmp(b->getMetadataString(), "delta_softplus=1") == 0);
        delete restored;
    }

    // --- types and formats --------------------------------------------------------------------------------------
    CHECK(build->getNbOutputs() == 1);
    DataType const halfIn[] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kHALF, DataType::kHALF,
        DataType::kFLOAT, DataType::kFLOAT};
    DataType outType = DataType::kINT8;
    CHECK(build->getOutputDataTypes(&outType, 1, halfIn, 7) == 0 && outType == DataType::kHALF);
    DataType const intIn[] = {DataType::kINT32, DataType::kINT32, DataType::kFLOAT, DataType::kINT32,
        DataType::kINT32, DataType::kFLOAT, DataType::kFLOAT};
    CHECK(build->getOutputDataTypes(&outType, 1, intIn, 7) != 0 && logger.saw("FP32 or FP16"));
    CHECK(build->getOutputDataTypes(&outType, 1, halfIn, 6) != 0 && logger.saw("7 or 8 inputs"));

    std::vector<nvinfer1::DynamicPluginTensorDesc> io(9);
    auto setType = [&io](int32_t pos, DataType t, nvinfer1::TensorFormat f = nvinfer1::TensorFormat::kLINEAR) {
        io[static_cast<size_t>(pos)].desc.type = t;
        io[static_cast<size_t>(pos)].desc.format = f;
    };
    for (DataType act : {DataType::kFLOAT, DataType::kHALF})
    {
        setType(0, act);
        CHECK(build->supportsFormatCombination(0, io.data(), 8, 1));
        for (int32_t pos : {1, 3, 4, 7, 8})
        {
            setType(pos, act);
            CHECK(build->supportsFormatCombination(pos, io.data(), 8, 1));
            setType(pos, act == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT);
            CHECK(!build->supportsFormatCombination(pos, io.data(), 8, 1));
        }
        for (int32_t pos : {2, 5, 6})
        {
            setType(pos, DataType::kFLOAT);
            CHECK(build->supportsFormatCombination(pos, io.data(), 8, 1));
            setType(pos, DataType::kHALF);
            CHECK(!build->supportsFormatCombination(pos, io.data(), 8, 1));
        }
    }
    setType(0, DataType::kINT8);
    CHECK(!build->supportsFormatCombination(0, io.data(), 8, 1));
    setType(0, DataType::kBF16);
    CHECK(!build->supportsFormatCombination(0, io.data(), 8, 1));
    setType(0, DataType::kHALF, nvinfer1::TensorFormat::kCHW2);
    CHECK(!build->supportsFormatCombination(0, io.data(), 8, 1));
    setType(0, DataType::kHALF);
    CHECK(!build->supportsFormatCombination(9, io.data(), 8, 1));
    CHECK(!build->supportsFormatCombination(0, io.data(), 6, 1));
    CHECK(logger.quiet());

    // --- output shapes -------------------------------------------------------------------------------------------
    {
        ExprPool pool;
        NullExprBuilder exprBuilder;
        std::vector<nvinfer1::DimsExprs> in;
        for (auto const& s : goodShapes())
        {
            in.push_back(pool.make(s));
        }
        nvinfer1::DimsExprs out{};
        CHECK(build->getOutputShapes(in.data(), 8, nullptr, 0, &out, 1, exprBuilder) == 0);
        CHECK(out.nbDims == 3 && out.d[0] == in[0].d[0] && out.d[1] == in[0].d[1] && out.d[2] == in[0].d[2]);
        CHECK(build->getOutputShapes(in.data(), 7, nullptr, 0, &out, 1, exprBuilder) == 0);
        CHECK(logger.quiet());

        std::vector<nvinfer1::DimsExprs> dynamic;
        for (auto s : goodShapes())
        {
            s[0] = -1; // dynamic batch / leading dimension
            dynamic.push_back(pool.make(s));
        }
        CHECK(build->getOutputShapes(dynamic.data(), 8, nullptr, 0, &out, 1, exprBuilder) == 0);

        std::vector<nvinfer1::DimsExprs> wrongN = in;
        wrongN[3] = pool.make({kB, kK, kN + 1, kL});
        CHECK(build->getOutputShapes(wrongN.data(), 8, nullptr, 0, &out, 1, exprBuilder) != 0);
        CHECK(logger.saw("input B must be (B, K, N, L)"));

        std::vector<nvinfer1::DimsExprs> wrongRank = in;
        wrongRank[2] = pool.make({kDIM, kN, 1});
        CHECK(build->getOutputShapes(wrongRank.data(), 8, nullptr, 0, &out, 1, exprBuilder) != 0);
        CHECK(logger.saw("input A must have rank 2"));

        std::vector<nvinfer1::DimsExprs> bigN = in;
        bigN[2] = pool.make({kDIM, 257});
        CHECK(build->getOutputShapes(bigN.data(), 8, nullptr, 0, &out, 1, exprBuilder) != 0);
        CHECK(logger.saw("[1, 256]"));
    }

    // --- configurePlugin / onShapeChange -----------------------------------------------------------------------
    {
        std::vector<nvinfer1::DynamicPluginTensorDesc> in(8);
        auto const d = descs(goodShapes(), DataType::kHALF);
        for (size_t i = 0; i < 8; ++i)
        {
            in[i].desc = d[i];
        }
        nvinfer1::DynamicPluginTensorDesc out{};
        out.desc = d[0];
        CHECK(build->configurePlugin(in.data(), 8, &out, 1) == 0);
        in[3].desc.dims = dims({kB, 5, kN, kL}); // K = 5 does not divide K*D = 12
        in[4].desc.dims = in[3].desc.dims;
        CHECK(build->configurePlugin(in.data(), 8, &out, 1) != 0 && logger.saw("must divide"));
    }

    // --- enqueue: parameters handed to the launcher --------------------------------------------------------------
    {
        // A fresh plugin refuses to run before it has seen shapes: enqueue cannot tell 7 inputs from 8.
        nvinfer1::IPluginV3* fresh = makePlugin(creator, 0);
        auto* freshRuntime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            fresh->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        auto const d0 = descs(goodShapes(), DataType::kFLOAT);
        void const* noInputs[8] = {};
        void* noOutputs[1] = {};
        CHECK(freshRuntime->enqueue(d0.data(), d0.data(), noInputs, noOutputs, nullptr, nullptr) != 0);
        CHECK(logger.saw("before configurePlugin"));
        delete fresh;

        nvinfer1::IPluginV3* attached = runtime->attachToContext(nullptr);
        CHECK(attached != nullptr && attached != plugin);
        auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            attached->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));

        char buffers[9][16];
        void const* inputs[8];
        for (int32_t i = 0; i < 8; ++i)
        {
            inputs[i] = buffers[i];
        }
        void* outputs[1] = {buffers[8]};
        auto const d = descs(goodShapes(), DataType::kHALF);
        CHECK(rt->onShapeChange(d.data(), 8, d.data(), 1) == 0);
        int32_t const before = m2s2l::gLaunches;
        CHECK(rt->enqueue(d.data(), d.data(), inputs, outputs, nullptr, nullptr) == 0);
        CHECK(m2s2l::gLaunches == before + 1);
        m2s2l::SelectiveScanParams const& p = m2s2l::gLastParams;
        CHECK(p.batch == kB && p.dim == kDIM && p.seqlen == kL && p.dstate == kN && p.groups == kK);
        CHECK(p.deltaSoftplus && p.ioDtype == m2s2l::ScanDType::kFLOAT16);
        CHECK(p.u == inputs[0] && p.delta == inputs[1] && p.A == inputs[2] && p.B == inputs[3]);
        CHECK(p.C == inputs[4] && p.D == inputs[5] && p.deltaBias == inputs[6] && p.z == inputs[7]);
        CHECK(p.y == outputs[0]);

        // Seven inputs: no gate. FP32 activations.
        auto const d7 = descs(goodShapes(), DataType::kFLOAT);
        CHECK(rt->onShapeChange(d7.data(), 7, d7.data(), 1) == 0);
        CHECK(rt->enqueue(d7.data(), d7.data(), inputs, outputs, nullptr, nullptr) == 0);
        CHECK(p.z == nullptr && p.ioDtype == m2s2l::ScanDType::kFLOAT32);

        // K = 1 (temporal blocks): B and C are (B, 1, N, L).
        auto shapes = goodShapes();
        shapes[3] = {kB, 1, kN, kL};
        shapes[4] = shapes[3];
        auto const k1 = descs(shapes, DataType::kHALF);
        CHECK(rt->onShapeChange(k1.data(), 8, k1.data(), 1) == 0);
        CHECK(rt->enqueue(k1.data(), k1.data(), inputs, outputs, nullptr, nullptr) == 0 && p.groups == 1);

        // An empty batch launches nothing.
        auto empty = goodShapes();
        for (size_t i : {0U, 1U, 3U, 4U, 7U})
        {
            empty[i][0] = 0;
        }
        auto const de = descs(empty, DataType::kHALF);
        CHECK(rt->onShapeChange(de.data(), 8, de.data(), 1) == 0);
        int32_t const launches = m2s2l::gLaunches;
        CHECK(rt->enqueue(de.data(), de.data(), inputs, outputs, nullptr, nullptr) == 0);
        CHECK(m2s2l::gLaunches == launches);

        // A launcher error becomes a non-zero status and a logged message, never an exception.
        CHECK(rt->onShapeChange(d.data(), 8, d.data(), 1) == 0);
        m2s2l::gLaunchResult = cudaErrorInvalidValue;
        CHECK(rt->enqueue(d.data(), d.data(), inputs, outputs, nullptr, nullptr) != 0);
        CHECK(logger.saw("cudaErrorInvalidValue"));
        m2s2l::gLaunchResult = cudaSuccess;

        // Bad runtime shapes are refused before enqueue.
        auto wrong = goodShapes();
        wrong[5] = {kDIM + 1};
        auto const dw = descs(wrong, DataType::kHALF);
        CHECK(rt->onShapeChange(dw.data(), 8, dw.data(), 1) != 0 && logger.saw("input D must be (K*D,)"));
        delete attached;
    }

    nvinfer1::IPluginV3* copy = plugin->clone();
    CHECK(copy != nullptr && copy != plugin);
    delete copy;
    delete plugin;
    CHECK(logger.quiet());

    if (gFailures == 0)
    {
        std::printf("PASS\n");
    }
    return gFailures == 0 ? 0 : 1;
}
