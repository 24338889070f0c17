// Load-time registration for libm2s2l_plugins_static.so, the flavour for a plain dlopen: trtexec --staticPlugins,
// Python ctypes.CDLL(path), or linking the library into an application. Registering while the library loads needs
// getPluginRegistry() from libnvinfer, so this library links libnvinfer; libm2s2l_plugins.so does not.
//
// Not REGISTER_TENSORRT_PLUGIN: that macro passes the namespace "" to registerCreator(), while the ONNX node asks
// for the creator under plugin_namespace "m2s2l" (scanSpec.h); registering under that namespace leaves no doubt.
// The creator is never deregistered: as with REGISTER_TENSORRT_PLUGIN, the library stays loaded for the life of the
// process, and deregistering during static destruction could touch a registry libnvinfer has already torn down.
#include "scanSpec.h"
#include "selectiveScanPlugin.h"

#include <string>

namespace m2s2l
{
namespace
{

class StaticRegistration
{
public:
    StaticRegistration() noexcept
    {
        try
        {
            static SelectiveScanPluginCreator sCreator;
            nvinfer1::IPluginRegistry* registry = ::getPluginRegistry();
            if (registry == nullptr || !registry->registerCreator(sCreator, kSCAN_PLUGIN_NAMESPACE))
            {
                std::string const message = std::string{"m2s2l: could not register plugin "} + kSCAN_PLUGIN_NAMESPACE
                    + "::" + kSCAN_OP_NAME + " v" + kSCAN_PLUGIN_VERSION
                    + " (already registered? load either libm2s2l_plugins.so or libm2s2l_plugins_static.so, not both)";
                logPluginMessage(nvinfer1::ILogger::Severity::kERROR, message.c_str());
            }
        }
        catch (...)
        {
            logPluginMessage(nvinfer1::ILogger::Severity::kERROR, "m2s2l: plugin registration failed");
        }
    }
};

StaticRegistration const gStaticRegistration{};

} // namespace
} // namespace m2s2l
