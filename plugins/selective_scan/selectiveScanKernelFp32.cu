// FP32 instantiations of the selective-scan kernel (one file per dtype keeps each compile unit small and parallel).
#include "selectiveScanTypedLaunch.cuh"

namespace m2s2l
{
namespace scan_detail
{

cudaError_t launchSelectiveScanFp32(SelectiveScanParams const& params, ScanLaunchConfig const& config,
    cudaStream_t stream)
{
    return launchForStates<float>(params, config, stream);
}

} // namespace scan_detail
} // namespace m2s2l
