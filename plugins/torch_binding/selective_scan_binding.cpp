// PyTorch binding of the forward selective-scan kernel (plugins/selective_scan): checks tensors, fills the plain
// params struct and calls the same launcher the TensorRT plugin uses, on PyTorch's current stream. Built on first
// use by m2s2l_edge/ops/cuda_backend.py (torch.utils.cpp_extension.load); the Python side does the user-facing
// argument checks, these TORCH_CHECKs only guard the kernel against a bypassed wrapper.
#include "selectiveScanForward.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
// The pybind11 casters for at::Tensor and std::optional, without torch/extension.h's whole C++ frontend (3x faster
// to compile).
#include <torch/csrc/utils/pybind.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <vector>

namespace
{

void checkCudaContiguous(at::Tensor const& t, char const* name, at::Device device)
{
    TORCH_CHECK(t.is_cuda(), "selective_scan_cuda: ", name, " must be a CUDA tensor");
    TORCH_CHECK(t.device() == device, "selective_scan_cuda: ", name, " is on ", t.device(), ", u on ", device);
    TORCH_CHECK(t.is_contiguous(), "selective_scan_cuda: ", name, " must be contiguous");
}

void checkShape(at::Tensor const& t, char const* name, at::IntArrayRef expected)
{
    TORCH_CHECK(t.sizes() == expected, "selective_scan_cuda: ", name, " must have shape ", expected, ", got ",
        t.sizes());
}

void const* dataOrNull(std::optional<at::Tensor> const& t)
{
    return t.has_value() ? t->data_ptr() : nullptr;
}

// Returns [y] or [y, last_state]. u, delta, B, C and z share one I/O dtype (float32 or float16); A, D and delta_bias
// are float32; last_state is float32 (batch, dim, dstate).
std::vector<at::Tensor> selectiveScanFwd(at::Tensor const& u, at::Tensor const& delta, at::Tensor const& A,
    at::Tensor const& B, at::Tensor const& C, std::optional<at::Tensor> const& D, std::optional<at::Tensor> const& z,
    std::optional<at::Tensor> const& deltaBias, bool deltaSoftplus, bool returnLastState, int64_t statesPerThread)
{
    TORCH_CHECK(u.dim() == 3, "selective_scan_cuda: u must be (B, KD, L)");
    TORCH_CHECK(A.dim() == 2 && B.dim() == 4, "selective_scan_cuda: A must be (KD, N) and B (B, K, N, L)");
    auto const device = u.device();
    int64_t const batch = u.size(0);
    int64_t const dim = u.size(1);
    int64_t const seqlen = u.size(2);
    int64_t const dstate = A.size(1);
    int64_t const groups = B.size(1);
    auto const ioType = u.scalar_type();
    TORCH_CHECK(ioType == at::kFloat || ioType == at::kHalf, "selective_scan_cuda: u must be float32 or float16");

    checkCudaContiguous(u, "u", device);
    checkCudaContiguous(delta, "delta", device);
    checkCudaContiguous(A, "A", device);
    checkCudaContiguous(B, "B", device);
    checkCudaContiguous(C, "C", device);
    checkShape(delta, "delta", u.sizes());
    checkShape(A, "A", {dim, dstate});
    checkShape(B, "B", {batch, groups, dstate, seqlen});
    checkShape(C, "C", {batch, groups, dstate, seqlen});
    TORCH_CHECK(groups >= 1 && dim % groups == 0, "selective_scan_cuda: K must divide KD");
    TORCH_CHECK(delta.scalar_type() == ioType && B.scalar_type() == ioType && C.scalar_type() == ioType,
        "selective_scan_cuda: delta, B and C must have u's dtype");
    TORCH_CHECK(A.scalar_type() == at::kFloat, "selective_scan_cuda: A must be float32");
    for (auto const* opt : {&D, &deltaBias})
    {
        if (opt->has_value())
        {
            checkCudaContiguous(**opt, "D/delta_bias", device);
            checkShape(**opt, "D/delta_bias", {dim});
            TORCH_CHECK((*opt)->scalar_type() == at::kFloat, "selective_scan_cuda: D and delta_bias must be float32");
        }
    }
    if (z.has_value())
    {
        checkCudaContiguous(*z, "z", device);
        checkShape(*z, "z", u.sizes());
        TORCH_CHECK(z->scalar_type() == ioType, "selective_scan_cuda: z must have u's dtype");
    }
    TORCH_CHECK(batch <= INT32_MAX && dim <= INT32_MAX && seqlen <= INT32_MAX,
        "selective_scan_cuda: sizes must fit in int32");

    c10::cuda::CUDAGuard const guard(device);
    at::Tensor y = at::empty_like(u);
    at::Tensor lastState;
    if (returnLastState)
    {
        lastState = at::empty({batch, dim, dstate}, u.options().dtype(at::kFloat));
    }
    if (batch == 0 || dim == 0 || seqlen == 0)
    {
        // Nothing to scan: h_L = h_0 = 0.
        if (returnLastState)
        {
            lastState.zero_();
        }
        return returnLastState ? std::vector<at::Tensor>{y, lastState} : std::vector<at::Tensor>{y};
    }

    m2s2l::SelectiveScanParams params{};
    params.batch = static_cast<int32_t>(batch);
    params.dim = static_cast<int32_t>(dim);
    params.groups = static_cast<int32_t>(groups);
    params.dstate = static_cast<int32_t>(dstate);
    params.seqlen = static_cast<int32_t>(seqlen);
    params.deltaSoftplus = deltaSoftplus;
    params.ioDtype = ioType == at::kHalf ? m2s2l::ScanDType::kFLOAT16 : m2s2l::ScanDType::kFLOAT32;
    params.u = u.data_ptr();
    params.delta = delta.data_ptr();
    params.A = A.data_ptr<float>();
    params.B = B.data_ptr();
    params.C = C.data_ptr();
    params.D = static_cast<float const*>(dataOrNull(D));
    params.deltaBias = static_cast<float const*>(dataOrNull(deltaBias));
    params.z = dataOrNull(z);
    params.y = y.data_ptr();
    params.lastState = returnLastState ? lastState.data_ptr<float>() : nullptr;
    params.statesPerThread = static_cast<int32_t>(statesPerThread);

    cudaError_t const status = m2s2l::selectiveScanForward(params, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(status == cudaSuccess, "selective_scan_cuda: kernel launch failed: ", cudaGetErrorName(status), " (",
        cudaGetErrorString(status), ")");
    return returnLastState ? std::vector<at::Tensor>{y, lastState} : std::vector<at::Tensor>{y};
}

// Attributes the benchmark's floor needs; CUDA 13 removed cudaDeviceProp::clockRate, the attribute remains.
std::vector<int64_t> deviceAttributes(int64_t device)
{
    int const dev = static_cast<int>(device);
    int clockKhz = 0;
    int smCount = 0;
    int smemOptin = 0;
    int memClockKhz = 0;
    int busWidth = 0;
    TORCH_CHECK(cudaDeviceGetAttribute(&clockKhz, cudaDevAttrClockRate, dev) == cudaSuccess
            && cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess
            && cudaDeviceGetAttribute(&smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess
            && cudaDeviceGetAttribute(&memClockKhz, cudaDevAttrMemoryClockRate, dev) == cudaSuccess
            && cudaDeviceGetAttribute(&busWidth, cudaDevAttrGlobalMemoryBusWidth, dev) == cudaSuccess,
        "cudaDeviceGetAttribute failed for device ", device);
    return {clockKhz, smCount, smemOptin, memClockKhz, busWidth};
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("fwd", &selectiveScanFwd, "Forward selective scan (mamba-ssm semantics) with the m2s2l CUDA kernel");
    m.def("device_attributes", &deviceAttributes,
        "[sm clock kHz, SM count, max opt-in shared memory per block, memory clock kHz, memory bus width bits]");
}
