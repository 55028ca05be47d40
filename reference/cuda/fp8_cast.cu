// FP8 cast with per-tensor scaling and saturation (loss_scaling's fp8_quantize), in CUDA C++.
//
//   scale = amax(|x|) / FP8_MAX   (1 for an all-zero x)
//   q     = fp8(x / scale)        rounded to nearest even, saturated to +-FP8_MAX (SATFINITE)
//
// Two launches: a grid-stride max of |x| (a block reduction in shared memory, then one
// atomicMax per block on the float's bits: for non-negative floats the order of the bits
// is the order of the values, and a NaN's bits sort above +inf), then the cast, each
// block reading amax and forming the scale itself. x is read in its own dtype (float32,
// float16, bfloat16) and divided in float32, as the Python reference does. Built by
// reference/cuda_ext.py with torch.utils.cpp_extension.load, cached by source hash.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_fp8.h>

namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void amax_kernel(const scalar_t* __restrict__ x, int64_t n, unsigned int* __restrict__ amax_bits) {
  __shared__ float shared[kThreads];
  float m = 0.0f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v = fabsf(static_cast<float>(x[i]));
    m = (v > m || v != v) ? v : m;  // keep a NaN once met
  }
  shared[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      float a = shared[threadIdx.x], b = shared[threadIdx.x + s];
      shared[threadIdx.x] = (b > a || b != b) ? b : a;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(shared[0]));
}

template <typename scalar_t, __nv_fp8_interpretation_t kind>
__global__ void cast_kernel(const scalar_t* __restrict__ x, int64_t n, const unsigned int* __restrict__ amax_bits,
                            float fp8_max, __nv_fp8_storage_t* __restrict__ q, float* __restrict__ scale_out) {
  const float amax = __uint_as_float(*amax_bits);
  // 1 for an all-zero x, and for a NaN amax too (as the Python reference's `amax > 0` test)
  const float scale = amax > 0.0f ? amax / fp8_max : 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_out = scale;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    q[i] = __nv_cvt_float_to_fp8(static_cast<float>(x[i]) / scale, __NV_SATFINITE, kind);
  }
}

}  // namespace

// Returns (q as uint8 codes of x's shape, scale float32 of shape []); Python views q as float8.
std::vector<torch::Tensor> fp8_quantize(torch::Tensor x, bool e4m3) {
  TORCH_CHECK(x.is_cuda(), "fp8_quantize: x must be a CUDA tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              "fp8_quantize: x must be float32, float16 or bfloat16");
  const at::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  const int64_t n = xc.numel();
  auto q = torch::empty(xc.sizes(), xc.options().dtype(at::kByte));
  auto scale = torch::empty({}, xc.options().dtype(at::kFloat));
  auto amax = torch::zeros({1}, xc.options().dtype(at::kInt));
  const float fp8_max = e4m3 ? 448.0f : 57344.0f;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t want = (n + kThreads - 1) / kThreads;
  const int blocks = (int)std::max<int64_t>(1, std::min<int64_t>(want, (int64_t)sms * 8));
  auto stream = at::cuda::getCurrentCUDAStream();
  auto* bits = reinterpret_cast<unsigned int*>(amax.data_ptr<int>());
  auto* codes = reinterpret_cast<__nv_fp8_storage_t*>(q.data_ptr<uint8_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xc.scalar_type(), "fp8_quantize", [&] {
    const auto* xp = xc.data_ptr<scalar_t>();
    if (n > 0) amax_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(xp, n, bits);
    if (e4m3) {
      cast_kernel<scalar_t, __NV_E4M3><<<blocks, kThreads, 0, stream>>>(xp, n, bits, fp8_max, codes,
                                                                        scale.data_ptr<float>());
    } else {
      cast_kernel<scalar_t, __NV_E5M2><<<blocks, kThreads, 0, stream>>>(xp, n, bits, fp8_max, codes,
                                                                        scale.data_ptr<float>());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {q, scale};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fp8_quantize", &fp8_quantize, "FP8 cast with per-tensor scaling and saturation (CUDA)");
}
