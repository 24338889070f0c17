// SelectiveScan (domain "m2s2l") as a native ONNX Runtime custom op: a shared library that any ONNX Runtime host
// loads with SessionOptions.register_custom_ops_library (Python), Ort::SessionOptions::RegisterCustomOpsLibrary (C++),
// RegisterCustomOpsLibrary_V2 (C) or Triton's onnxruntime backend (model_operations { op_library_filename }).
// It runs our CPU kernel (scan_cpu.cpp, compiled into the same library) on ONNX Runtime's intra-op thread pool.
//
// The node (export/scan_onnx.py, docs/DESIGN.md §5): inputs u, delta, A, B, C, D, delta_bias[, z], output y;
// attribute delta_softplus (plugin_version / plugin_namespace are TensorRT's and ignored here).
//   u, delta, z, y : (B, KD, L)    T = float or float16
//   A              : (KD, N)       float
//   B, C           : (B, K, N, L)  T
//   D, delta_bias  : (KD,)         float
// FP16 follows the TensorRT plugin's contract: inputs are widened to float, the state and every sum are float, y is
// rounded to float16 once. Two op instances (one per T) share the name; ONNX Runtime picks one by the input types.
//
// ONNX Runtime's C API is versioned and append-only: the library asks for kApiVersion (not the headers' newer
// ORT_API_VERSION) and uses nothing later, so it runs in every ONNX Runtime from 1.17 on (ParallelFor and the
// status-returning kernel entry points are 1.17's), whichever headers it was compiled against.
// Every entry point returns an OrtStatus instead of letting a C++ exception cross into ONNX Runtime.

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

// The CPU kernel's C ABI (scan_cpu.cpp): float entry point, transposed B and C, 0 = success.
extern "C" int m2s2l_scan_fwd_f32(float const* u, float const* delta, float const* A, float const* Bt, float const* Ct,
    float const* D, float const* z, float const* deltaBias, int32_t softplus, int64_t batch, int64_t dim,
    int64_t groups, int64_t dstate, int64_t seqlen, float* y, float* lastState, int32_t numThreads) noexcept;
extern "C" char const* m2s2l_scan_status_string(int status) noexcept;

namespace m2s2l_ort
{
namespace
{

constexpr uint32_t kApiVersion = 17;
static_assert(ORT_API_VERSION >= kApiVersion, "these ONNX Runtime headers are older than the API the op needs");

constexpr char const* kDomain = "m2s2l";
constexpr char const* kOpName = "SelectiveScan";
enum Input : size_t
{
    kU = 0,
    kDelta,
    kA,
    kB,
    kC,
    kD,
    kDeltaBias,
    kZ,
    kNumInputs
};
// Channels per task of the thread pool: about 20 us of work at L = 1024, N = 16, so that the pool's per-task cost
// stays small while a 2-core machine still gets many tasks to balance.
constexpr int64_t kChannelsPerTask = 8;
// State updates (B * KD * L * N) per batch of tasks below which waking another pool thread costs more than it saves
// (about 20 us of work, as cpu_kernel.py's _MIN_WORK_PER_THREAD): small scans run on the calling thread, which also
// keeps them off a pool thread that a loaded machine may have descheduled.
constexpr int64_t kMinWorkPerBatch = int64_t{1} << 16;

// A user-facing failure: becomes an ORT_INVALID_ARGUMENT status with this message.
struct BadInput : std::runtime_error
{
    using std::runtime_error::runtime_error;
};

std::string shapeString(std::vector<int64_t> const& shape)
{
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return s + ")";
}

// float16 <-> float without F16C (any CPU): exact widening; narrowing rounds to nearest even like the hardware.
float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000U) << 16;
    uint32_t exponent = (h >> 10) & 0x1FU;
    uint32_t mantissa = h & 0x3FFU;
    uint32_t bits;
    if (exponent == 0x1FU)
    {
        bits = sign | 0x7F800000U | (mantissa << 13); // inf / NaN
    }
    else if (exponent != 0)
    {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
    else if (mantissa == 0)
    {
        bits = sign;
    }
    else
    {
        // Subnormal half: normalise.
        exponent = 113;
        while ((mantissa & 0x400U) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t floatToHalf(float f)
{
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    uint16_t const sign = static_cast<uint16_t>((bits >> 16) & 0x8000U);
    uint32_t const absBits = bits & 0x7FFFFFFFU;
    if (absBits >= 0x7F800000U)
    {
        return sign | 0x7C00U | (absBits > 0x7F800000U ? 0x200U : 0U); // inf, or a quiet NaN
    }
    if (absBits >= 0x477FF000U)
    {
        return sign | 0x7C00U; // rounds to a value above 65504: inf
    }
    if (absBits < 0x38800000U)
    {
        // Result is subnormal (or zero): scale the mantissa into place, round to nearest even.
        if (absBits < 0x33000000U)
        {
            return sign; // below half the smallest subnormal
        }
        uint32_t const exponent = absBits >> 23;
        uint32_t const mantissa = (absBits & 0x7FFFFFU) | 0x800000U;
        uint32_t const shift = 126 - exponent; // 14..24
        uint32_t half = mantissa >> shift;
        uint32_t const rest = mantissa & ((1U << shift) - 1);
        uint32_t const halfway = 1U << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1U)))
        {
            ++half;
        }
        return sign | static_cast<uint16_t>(half);
    }
    uint32_t half = ((absBits >> 13) - (112U << 10));
    uint32_t const rest = absBits & 0x1FFFU;
    if (rest > 0x1000U || (rest == 0x1000U && (half & 1U)))
    {
        ++half; // may carry into the exponent: correct, up to inf
    }
    return sign | static_cast<uint16_t>(half);
}

// One input as float: the tensor's own memory for float, a widened copy in `store` for float16.
float const* asFloat(Ort::ConstValue const& value, bool half, size_t count, std::vector<float>& store)
{
    if (!half)
    {
        return value.GetTensorData<float>();
    }
    uint16_t const* src = reinterpret_cast<uint16_t const*>(value.GetTensorRawData());
    store.resize(count);
    for (size_t i = 0; i < count; ++i)
    {
        store[i] = halfToFloat(src[i]);
    }
    return store.data();
}

// (B, K, N, L) -> (B, K, L, N), widened to float: the kernel wants the N states of one step contiguous.
void transposeBC(Ort::ConstValue const& value, bool half, int64_t bk, int64_t n, int64_t length, float* out)
{
    float const* f32 = half ? nullptr : value.GetTensorData<float>();
    uint16_t const* f16 = half ? reinterpret_cast<uint16_t const*>(value.GetTensorRawData()) : nullptr;
    for (int64_t g = 0; g < bk; ++g)
    {
        int64_t const base = g * n * length;
        float* dst = out + base;
        for (int64_t s = 0; s < n; ++s)
        {
            for (int64_t t = 0; t < length; ++t)
            {
                int64_t const i = base + s * length + t;
                dst[t * n + s] = half ? halfToFloat(f16[i]) : f32[i];
            }
        }
    }
}

struct ScanTask
{
    float const* u;
    float const* delta;
    float const* A;
    float const* Bt;
    float const* Ct;
    float const* D;
    float const* z;
    float const* deltaBias;
    float* y;
    int32_t softplus;
    int64_t batch;
    int64_t dim;
    int64_t groups;
    int64_t dstate;
    int64_t seqlen;
    int64_t chunksPerGroup;
    int status; // first failure of any task (tasks only ever write a non-zero value)
};

// One task of the thread pool: a run of at most kChannelsPerTask channels of one (batch, group), all in one group
// so that the kernel sees a single B_t / C_t slice (groups = 1).
void runTask(void* data, size_t index)
{
    ScanTask& a = *static_cast<ScanTask*>(data);
    int64_t const perGroup = a.dim / a.groups;
    int64_t const chunk = static_cast<int64_t>(index) % a.chunksPerGroup;
    int64_t const bk = static_cast<int64_t>(index) / a.chunksPerGroup; // b * groups + k
    int64_t const b = bk / a.groups;
    int64_t const k = bk % a.groups;
    int64_t const d0 = k * perGroup + chunk * kChannelsPerTask;
    int64_t const count = std::min(kChannelsPerTask, (k + 1) * perGroup - d0);
    int64_t const row = (b * a.dim + d0) * a.seqlen;
    int64_t const group = bk * a.seqlen * a.dstate;
    int const status = m2s2l_scan_fwd_f32(a.u + row, a.delta + row, a.A + d0 * a.dstate, a.Bt + group, a.Ct + group,
        a.D != nullptr ? a.D + d0 : nullptr, a.z != nullptr ? a.z + row : nullptr,
        a.deltaBias != nullptr ? a.deltaBias + d0 : nullptr, a.softplus, 1, count, 1, a.dstate, a.seqlen, a.y + row,
        nullptr, 1);
    if (status != 0)
    {
        a.status = status; // every writer writes a failure; which one is kept does not matter
    }
}

class ScanKernel
{
public:
    ScanKernel(OrtKernelInfo const* info, bool half)
        : mHalf(half)
    {
        Ort::ConstKernelInfo const kernelInfo(info);
        int64_t softplus = 0;
        // Absent means 0, like the TensorRT plugin's default.
        if (Ort::Status(Ort::GetApi().KernelInfoGetAttribute_int64(info, "delta_softplus", &softplus)).IsOK())
        {
            mSoftplus = softplus != 0;
        }
        mName = kernelInfo.GetNodeName();
    }

    OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept
    {
        try
        {
            compute(context);
            return nullptr;
        }
        catch (BadInput const& e)
        {
            return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, (mName + ": " + e.what()).c_str());
        }
        catch (Ort::Exception const& e)
        {
            return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), (mName + ": " + e.what()).c_str());
        }
        catch (std::bad_alloc const&)
        {
            return Ort::GetApi().CreateStatus(ORT_FAIL, (mName + ": out of memory").c_str());
        }
        catch (std::exception const& e)
        {
            return Ort::GetApi().CreateStatus(ORT_FAIL, (mName + ": " + e.what()).c_str());
        }
        catch (...)
        {
            return Ort::GetApi().CreateStatus(ORT_FAIL, (mName + ": unknown error").c_str());
        }
    }

private:
    void compute(OrtKernelContext* context)
    {
        Ort::KernelContext ctx(context);
        size_t const inputs = ctx.GetInputCount();
        if (inputs < kZ || inputs > kNumInputs)
        {
            throw BadInput("SelectiveScan takes 7 or 8 inputs, got " + std::to_string(inputs));
        }
        Ort::ConstValue values[kNumInputs];
        for (size_t i = 0; i < inputs; ++i)
        {
            values[i] = ctx.GetInput(i);
        }
        bool const hasZ = inputs == kNumInputs && static_cast<OrtValue const*>(values[kZ]) != nullptr;
        auto shapeOf = [&](size_t i) {
            if (static_cast<OrtValue const*>(values[i]) == nullptr)
            {
                throw BadInput("input " + std::to_string(i) + " is missing");
            }
            return values[i].GetTensorTypeAndShapeInfo().GetShape();
        };
        std::vector<int64_t> const uShape = shapeOf(kU);
        std::vector<int64_t> const aShape = shapeOf(kA);
        std::vector<int64_t> const bShape = shapeOf(kB);
        if (uShape.size() != 3 || aShape.size() != 2 || bShape.size() != 4)
        {
            throw BadInput("expected u (B, KD, L), A (KD, N), B (B, K, N, L); got u " + shapeString(uShape) + ", A "
                + shapeString(aShape) + ", B " + shapeString(bShape));
        }
        int64_t const batch = uShape[0];
        int64_t const dim = uShape[1];
        int64_t const length = uShape[2];
        int64_t const dstate = aShape[1];
        int64_t const groups = bShape[1];
        std::vector<int64_t> const bExpected{batch, groups, dstate, length};
        bool const shapesOk = aShape[0] == dim && dstate >= 1 && groups >= 1 && dim % groups == 0
            && bShape == bExpected && shapeOf(kDelta) == uShape && shapeOf(kC) == bExpected
            && shapeOf(kD) == std::vector<int64_t>{dim} && shapeOf(kDeltaBias) == std::vector<int64_t>{dim}
            && (!hasZ || shapeOf(kZ) == uShape);
        if (!shapesOk)
        {
            throw BadInput("inconsistent shapes: u " + shapeString(uShape) + ", delta " + shapeString(shapeOf(kDelta))
                + ", A " + shapeString(aShape) + ", B " + shapeString(bShape) + ", C " + shapeString(shapeOf(kC))
                + ", D " + shapeString(shapeOf(kD)) + ", delta_bias " + shapeString(shapeOf(kDeltaBias))
                + (hasZ ? ", z " + shapeString(shapeOf(kZ)) : std::string())
                + "; expected u, delta, z (B, KD, L), A (KD, N), B, C (B, K, N, L) with K dividing KD, D and "
                  "delta_bias (KD,)");
        }
        Ort::UnownedValue output = ctx.GetOutput(0, uShape);
        size_t const rows = static_cast<size_t>(batch * dim * length);
        if (rows == 0)
        {
            return;
        }
        size_t const bcCount = static_cast<size_t>(batch * groups * dstate * length);
        std::vector<float> uStore;
        std::vector<float> deltaStore;
        std::vector<float> zStore;
        std::vector<float> bt(bcCount);
        std::vector<float> ct(bcCount);
        std::vector<float> yStore;
        float const* u = asFloat(values[kU], mHalf, rows, uStore);
        float const* delta = asFloat(values[kDelta], mHalf, rows, deltaStore);
        float const* z = hasZ ? asFloat(values[kZ], mHalf, rows, zStore) : nullptr;
        transposeBC(values[kB], mHalf, batch * groups, dstate, length, bt.data());
        transposeBC(values[kC], mHalf, batch * groups, dstate, length, ct.data());
        float* y = nullptr;
        if (mHalf)
        {
            yStore.resize(rows);
            y = yStore.data();
        }
        else
        {
            y = output.GetTensorMutableData<float>();
        }
        int64_t const chunksPerGroup = (dim / groups + kChannelsPerTask - 1) / kChannelsPerTask;
        ScanTask task{u, delta, values[kA].GetTensorData<float>(), bt.data(), ct.data(),
            values[kD].GetTensorData<float>(), z, values[kDeltaBias].GetTensorData<float>(), y,
            mSoftplus ? 1 : 0, batch, dim, groups, dstate, length, chunksPerGroup, 0};
        size_t const tasks = static_cast<size_t>(batch * groups * chunksPerGroup);
        size_t const batches = static_cast<size_t>(
            std::clamp<int64_t>(batch * dim * length * dstate / kMinWorkPerBatch, 1, static_cast<int64_t>(tasks)));
        // The session's intra-op pool: the thread count the user gave ONNX Runtime, no second pool beside it.
        Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(context, runTask, tasks, batches, &task));
        if (task.status != 0)
        {
            throw std::runtime_error(std::string("CPU selective scan failed: ") + m2s2l_scan_status_string(task.status));
        }
        if (mHalf)
        {
            uint16_t* out = reinterpret_cast<uint16_t*>(output.GetTensorMutableRawData());
            for (size_t i = 0; i < rows; ++i)
            {
                out[i] = floatToHalf(yStore[i]);
            }
        }
    }

    bool mHalf;
    bool mSoftplus = false;
    std::string mName;
};

template <bool Half>
struct ScanOp : Ort::CustomOpBase<ScanOp<Half>, ScanKernel, /*WithStatus=*/true>
{
    ScanOp()
    {
        // Declare the API version the op is written against, not the headers': ONNX Runtime refuses an op newer
        // than itself and reads only the fields that version defines.
        OrtCustomOp::version = kApiVersion;
    }

    OrtStatusPtr CreateKernelV2(OrtApi const& api, OrtKernelInfo const* info, void** kernel) const noexcept
    {
        try
        {
            *kernel = new ScanKernel(info, Half);
            return nullptr;
        }
        catch (Ort::Exception const& e)
        {
            return api.CreateStatus(e.GetOrtErrorCode(), e.what());
        }
        catch (std::exception const& e)
        {
            return api.CreateStatus(ORT_FAIL, e.what());
        }
    }

    char const* GetName() const
    {
        return kOpName;
    }

    size_t GetInputTypeCount() const
    {
        return kNumInputs;
    }

    ONNXTensorElementDataType GetInputType(size_t index) const
    {
        bool const parameter = index == kA || index == kD || index == kDeltaBias;
        return parameter || !Half ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    }

    OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const
    {
        return index == kZ ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                           : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
    }

    size_t GetOutputTypeCount() const
    {
        return 1;
    }

    ONNXTensorElementDataType GetOutputType(size_t /*index*/) const
    {
        return Half ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
};

ScanOp<false> const gScanFloat;
ScanOp<true> const gScanHalf;

// Domains handed to sessions must outlive them; one per registration, released when the library unloads.
struct DomainDeleter
{
    void operator()(OrtCustomOpDomain* domain) const
    {
        Ort::GetApi().ReleaseCustomOpDomain(domain);
    }
};
std::mutex gDomainsMutex;
std::vector<std::unique_ptr<OrtCustomOpDomain, DomainDeleter>> gDomains;

} // namespace
} // namespace m2s2l_ort

// Called by ONNX Runtime when the library is registered with a session's options.
extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(
    OrtSessionOptions* options, OrtApiBase const* apiBase)
{
    using namespace m2s2l_ort;
    OrtApi const* api = apiBase->GetApi(kApiVersion);
    if (api == nullptr)
    {
        // An ONNX Runtime older than 1.17: version 1 of its API still creates the status that says so.
        OrtApi const* v1 = apiBase->GetApi(1);
        std::string const message = std::string("the m2s2l SelectiveScan op library needs ONNX Runtime >= 1.17 (C API ")
            + std::to_string(kApiVersion) + "); this one is " + apiBase->GetVersionString();
        return v1 != nullptr ? v1->CreateStatus(ORT_FAIL, message.c_str()) : nullptr;
    }
    Ort::InitApi(api);
    OrtCustomOpDomain* raw = nullptr;
    if (OrtStatus* status = api->CreateCustomOpDomain(kDomain, &raw))
    {
        return status;
    }
    std::unique_ptr<OrtCustomOpDomain, DomainDeleter> domain(raw);
    for (OrtCustomOp const* op : {static_cast<OrtCustomOp const*>(&gScanFloat), static_cast<OrtCustomOp const*>(&gScanHalf)})
    {
        if (OrtStatus* status = api->CustomOpDomain_Add(domain.get(), op))
        {
            return status;
        }
    }
    if (OrtStatus* status = api->AddCustomOpDomain(options, domain.get()))
    {
        return status;
    }
    std::lock_guard<std::mutex> const lock(gDomainsMutex);
    gDomains.push_back(std::move(domain));
    return nullptr;
}

// The op library's ABI version, for the Python loader's sanity check (cpu_kernel.py does the same for the kernel).
extern "C" __attribute__((visibility("default"))) int m2s2l_ort_op_abi_version()
{
    return 1;
}
