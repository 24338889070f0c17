// A stand-in libnvinfer.so that provides only getPluginRegistry(), with a registry that records registerCreator()
// calls. tests/test_trt_plugin_source.py links libm2s2l_plugins_static.so against it through CMake (a TensorRT_ROOT
// laid out like the tarball: include/ + lib/libnvinfer.so) and checks that loading the library registers the
// SelectiveScan creator under the namespace "m2s2l". Compiled against the same TensorRT headers as the plugin, so
// the virtual tables agree.
#include "NvInferRuntime.h"

#include <cstring>
#include <string>

#define M2S2L_FAKE_EXPORT __attribute__((visibility("default")))

namespace
{

std::string gRegistered;

class RecordingRegistry : public nvinfer1::IPluginRegistry
{
public:
    bool registerCreator(
        nvinfer1::IPluginCreatorInterface& creator, nvinfer1::AsciiChar const* const pluginNamespace) noexcept override
    {
        if (std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            return false;
        }
        auto& c = static_cast<nvinfer1::IPluginCreatorV3One&>(creator);
        gRegistered += std::string{c.getPluginName()} + "|" + c.getPluginVersion() + "|" + c.getPluginNamespace() + "|"
            + (pluginNamespace != nullptr ? pluginNamespace : "<null>") + ";";
        return true;
    }

    // Everything below is unused by the plugin library.
    bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const) const noexcept override
    {
        return nullptr;
    }
    nvinfer1::IPluginCreator* getPluginCreator(
        nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const) noexcept
        override
    {
        return nullptr;
    }
    void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override
    {
        return false;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(nvinfer1::AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const) const noexcept override
    {
        return nullptr;
    }
    nvinfer1::IPluginCreatorInterface* getCreator(
        nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const) noexcept
        override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginResource* acquirePluginResource(
        nvinfer1::AsciiChar const*, nvinfer1::IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override
    {
        return 0;
    }
};

} // namespace

extern "C" M2S2L_FAKE_EXPORT nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    static RecordingRegistry sRegistry;
    return &sRegistry;
}

// "name|version|creator namespace|registered namespace;" for every registerCreator() call.
extern "C" M2S2L_FAKE_EXPORT char const* fakeRegisteredCreators() noexcept
{
    return gRegistered.c_str();
}
