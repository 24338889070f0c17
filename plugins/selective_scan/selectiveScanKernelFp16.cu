// FP16 instantiations of the selective-scan kernel: FP16 inputs and output, FP32 state and accumulation.
#include "selectiveScanTypedLaunch.cuh"

namespace m2s2l
{
namespace scan_detail
{

cudaError_t launchSelectiveScanFp16(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream)
{
    return launchForStates<__half>(params, config, stream);
}

} // namespace scan_detail
} // namespace m2s2l
