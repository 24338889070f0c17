// Entry points of libm2s2l_plugins.so, the plugin library TensorRT loads itself: IPluginRegistry::loadLibrary
// (Python: trt.get_plugin_registry().load_library(path)), trtexec --dynamicPlugins and --setPluginsToSerialize, and
// version-compatible engines that carry the library. TensorRT calls setLoggerFinder() and then getCreators() and
// registers each creator under the namespace the creator reports (scanSpec.h: "m2s2l").
//
// IPluginV3 creators can also be registered as the library is loaded (REGISTER_TENSORRT_PLUGIN or a static object
// calling getPluginRegistry()->registerCreator()), which is what trtexec --staticPlugins (a plain dlopen) relies on.
// One library must not do both: loadLibrary() refuses a library whose creators are already registered. The
// self-registering flavour is therefore a second library, libm2s2l_plugins_static.so (pluginStaticRegistration.cpp).
#include "selectiveScanPlugin.h"

#include <cstdint>

#define M2S2L_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" M2S2L_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    m2s2l::setPluginLoggerFinder(finder);
}

extern "C" M2S2L_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    try
    {
        static m2s2l::SelectiveScanPluginCreator sSelectiveScanCreator;
        static nvinfer1::IPluginCreatorInterface* const kCREATORS[] = {&sSelectiveScanCreator};
        nbCreators = static_cast<int32_t>(sizeof(kCREATORS) / sizeof(kCREATORS[0]));
        return kCREATORS;
    }
    catch (...)
    {
        m2s2l::logPluginMessage(nvinfer1::ILogger::Severity::kERROR,
            "m2s2l: could not create the plugin creators (out of memory?)");
    }
    nbCreators = 0;
    return nullptr;
}
