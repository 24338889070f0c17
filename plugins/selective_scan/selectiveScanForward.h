// Forward selective scan (mamba-ssm semantics, docs/DESIGN.md §4): CUDA kernel launcher with no TensorRT dependency.
//
// For batch b, channel d (of dim = K*D channels, group k = d / (dim / K)), state n:
//   dt_t = softplus(delta_t + delta_bias[d])   if delta_softplus, else delta_t + delta_bias[d]
//   h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B[b, k, n, t] * u_t        (h_0 = 0)
//   y_t  = sum_n C[b, k, n, t] * h_t[n] + D[d] * u_t
//   y_t *= silu(z_t)                            if z != nullptr
// Layouts (all contiguous, row-major):
//   u, delta, z, y : (batch, dim, seqlen)          dtype = io_dtype
//   A              : (dim, dstate)                 float32
//   B, C           : (batch, groups, dstate, seqlen) dtype = io_dtype
//   D, delta_bias  : (dim,)                        float32 (delta_bias may be nullptr: zero)
//   lastState      : (batch, dim, dstate)          float32 (optional output, h_L)
// State and accumulation are float32 whatever io_dtype is.
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

namespace m2s2l
{

enum class ScanDType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

struct SelectiveScanParams
{
    int32_t batch;
    int32_t dim;     // K * D channels
    int32_t groups;  // K (1 for temporal blocks, 4 for SS2D); dim % groups == 0
    int32_t dstate;  // N, 1 <= N <= 256
    int32_t seqlen;  // L >= 1, any value
    bool deltaSoftplus;
    ScanDType ioDtype;

    void const* u;
    void const* delta;
    float const* A;
    void const* B;
    void const* C;
    float const* D;          // may be nullptr: no skip term
    float const* deltaBias;  // may be nullptr: zero bias
    void const* z;           // may be nullptr: no gate
    void* y;

    // Added after the first version of this contract; the defaults keep `SelectiveScanParams p{};` (and code that
    // never sets them) behaving as before.
    float* lastState = nullptr;   // may be nullptr: h_L is not written
    int32_t statesPerThread = 0;  // 0: the launcher chooses; 2, 4 or 8 forces that kernel variant (tests, tuning)
};

// Validates the parameters, launches the kernel on `stream` and returns cudaGetLastError() (or
// cudaErrorInvalidValue for bad parameters). Never throws.
cudaError_t selectiveScanForward(SelectiveScanParams const& params, cudaStream_t stream);

} // namespace m2s2l
