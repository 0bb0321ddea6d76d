// The two products of the sparse Langevin path, as TensorFlow CPU ops.
//
// A TopK-sparse feature map keeps K of its h*w*c units, so the transposed conv's matmul
// x [M, K_in] * w [K_in, N] multiplies mostly zeros, and the backward product
// g [M, N] * w^T is only needed where the TopK mask is 1. Neither TensorFlow's
// SparseTensorDenseMatMul nor XLA:CPU's gathers beat the dense matmul at the paper's 6.25%;
// these two loops do, because each kept unit's basis row of
// w is read once, contiguously, from cache:
//
//   SparseRowsMatmul(x, w)        y[m, :] = sum over k with x[m, k] != 0 of x[m, k] * w[k, :]
//   MaskedMatmulT(g, w, mask)     y[m, k] = <g[m, :], w[k, :]> where mask[m, k] != 0, else 0
//
// Both equal the dense products up to the order of the float sums. float32, rank 2; rows
// are split over TensorFlow's intra-op thread pool. Built and loaded at first use by
// sparse_gen_tf/model/sparse_kernels.py.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace sparse_gen_tf {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Output columns summed at a time by SparseRowsMatmul: 8 AVX-512 or 16 AVX2 registers.
constexpr int64_t kBlock = 128;

REGISTER_OP("SparseRowsMatmul")
    .Input("x: float")
    .Input("w: float")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, w;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
      c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(w, 1)));
      return absl::OkStatus();
    });

REGISTER_OP("MaskedMatmulT")
    .Input("g: float")
    .Input("w: float")
    .Input("mask: float")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle mask;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &mask));
      c->set_output(0, mask);
      return absl::OkStatus();
    });

REGISTER_OP("SparseTransposedConv")
    .Input("x: float")
    .Input("kernel: float")
    .Attr("stride: int >= 1")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &kernel));
      int stride;
      TF_RETURN_IF_ERROR(c->GetAttr("stride", &stride));
      ::tensorflow::shape_inference::DimensionHandle h, w;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 1), stride, &h));
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 2), stride, &w));
      c->set_output(0, c->MakeShape({c->Dim(x, 0), h, w, c->Dim(kernel, 3)}));
      return absl::OkStatus();
    });

REGISTER_OP("MaskedTransposedConvT")
    .Input("g: float")
    .Input("kernel: float")
    .Input("mask: float")
    .Attr("stride: int >= 1")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle mask;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &mask));
      c->set_output(0, mask);
      return absl::OkStatus();
    });

class SparseRowsMatmulOp : public OpKernel {
 public:
  explicit SparseRowsMatmulOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() == 2 && w.dims() == 2 && x.dim_size(1) == w.dim_size(0),
                absl::InvalidArgumentError(
                    "SparseRowsMatmul needs x [M, K] and w [K, N], got " +
                    x.shape().DebugString() + " and " + w.shape().DebugString()));
    const int64_t rows = x.dim_size(0), inner = x.dim_size(1), cols = w.dim_size(1);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows, cols}), &y));
    const float* __restrict xs = x.flat<float>().data();
    const float* __restrict ws = w.flat<float>().data();
    float* __restrict ys = y->flat<float>().data();
    auto paint = [&](int64_t begin, int64_t end) {
      std::vector<int64_t> kept;
      std::vector<float> values;
      kept.reserve(inner);
      values.reserve(inner);
      for (int64_t m = begin; m < end; ++m) {
        // The row's kept units (TopK and ReLU dropped the rest), then their basis rows
        // summed a block of kBlock columns at a time, so that the block's partial sums
        // stay in registers while the rows stream through.
        kept.clear();
        values.clear();
        const float* __restrict xm = xs + m * inner;
        for (int64_t k = 0; k < inner; ++k) {
          if (xm[k] != 0.0f) {
            kept.push_back(k);
            values.push_back(xm[k]);
          }
        }
        float* __restrict out = ys + m * cols;
        const int64_t units = static_cast<int64_t>(kept.size());
        for (int64_t n0 = 0; n0 < cols; n0 += kBlock) {
          const int64_t width = std::min<int64_t>(kBlock, cols - n0);
          float block[kBlock] = {0.0f};
          for (int64_t u = 0; u < units; ++u) {
            const float value = values[u];
            const float* __restrict basis = ws + kept[u] * cols + n0;
            if (width == kBlock) {
#pragma omp simd
              for (int64_t n = 0; n < kBlock; ++n) block[n] += value * basis[n];
            } else {
              for (int64_t n = 0; n < width; ++n) block[n] += value * basis[n];
            }
          }
          std::memcpy(out + n0, block, sizeof(float) * width);
        }
      }
    };
    // Cost per row: a scan of its K_in entries plus, for the few kept ones, an axpy.
    ::tensorflow::Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
                        ctx->device()->tensorflow_cpu_worker_threads()->workers, rows,
                        inner + cols * 16, paint);
  }
};

class MaskedMatmulTOp : public OpKernel {
 public:
  explicit MaskedMatmulTOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& g = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    OP_REQUIRES(ctx, g.dims() == 2 && w.dims() == 2 && mask.dims() == 2 &&
                         g.dim_size(1) == w.dim_size(1) && mask.dim_size(0) == g.dim_size(0) &&
                         mask.dim_size(1) == w.dim_size(0),
                absl::InvalidArgumentError(
                    "MaskedMatmulT needs g [M, N], w [K, N] and mask [M, K], got " +
                    g.shape().DebugString() + ", " + w.shape().DebugString() + " and " +
                    mask.shape().DebugString()));
    const int64_t rows = g.dim_size(0), cols = g.dim_size(1), inner = w.dim_size(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mask.shape(), &y));
    const float* __restrict gs = g.flat<float>().data();
    const float* __restrict ws = w.flat<float>().data();
    const float* __restrict ms = mask.flat<float>().data();
    float* __restrict ys = y->flat<float>().data();
    auto read_back = [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        const float* __restrict gm = gs + m * cols;
        for (int64_t k = 0; k < inner; ++k) {
          float sum = 0.0f;
          if (ms[m * inner + k] != 0.0f) {  // only the kept units get a gradient
            const float* __restrict basis = ws + k * cols;
#pragma omp simd reduction(+ : sum)
            for (int64_t n = 0; n < cols; ++n) sum += gm[n] * basis[n];
          }
          ys[m * inner + k] = sum;
        }
      }
    };
    ::tensorflow::Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
                        ctx->device()->tensorflow_cpu_worker_threads()->workers, rows,
                        inner + cols * 16, read_back);
  }
};

// The 'same' transposed conv of TransposedConv (out[i*s + p - pad] += x[i] * ker[p],
// pad = (k - s) / 2, output h*s x w*s) on a sparse input, for kernels larger than their
// stride: each kept unit (y, x, c) adds kernel[c, py, px, :] into the output pixels its
// patch reaches, skipping those the padding crops. The kernel [c_in, k, k, c_out] is
// read per tap, c_out floats at a time, and shared by all positions, so it stays in cache.
struct ConvGeometry {
  int64_t batch, h, w, c_in, k, c_out, stride, pad, out_h, out_w;
};

static bool Geometry(OpKernelContext* ctx, const Tensor& map, const Tensor& kernel,
                     int64_t stride, ConvGeometry* g) {
  if (!(map.dims() == 4 && kernel.dims() == 4 && kernel.dim_size(1) == kernel.dim_size(2) &&
        map.dim_size(3) == kernel.dim_size(0) && kernel.dim_size(1) >= stride)) {
    ctx->SetStatus(absl::InvalidArgumentError(
        "SparseTransposedConv needs a map [batch, h, w, c_in] and a kernel "
        "[c_in, k, k, c_out] with k >= stride, got " + map.shape().DebugString() + " and " +
        kernel.shape().DebugString()));
    return false;
  }
  g->batch = map.dim_size(0);
  g->h = map.dim_size(1);
  g->w = map.dim_size(2);
  g->c_in = map.dim_size(3);
  g->k = kernel.dim_size(1);
  g->c_out = kernel.dim_size(3);
  g->stride = stride;
  g->pad = (g->k - stride) / 2;
  g->out_h = g->h * stride;
  g->out_w = g->w * stride;
  return true;
}

// For unit j (row, col, channel c of the input map, channels fastest), calls
// fn(offset of kernel[c, py, px, :], offset of output pixel (oy, ox)) for each tap whose
// pixel oy = row*s + py - pad, ox = col*s + px - pad the 'same' crop keeps.
template <typename Fn>
inline void ForEachTap(const ConvGeometry& g, int64_t j, Fn fn) {
  const int64_t c = j % g.c_in, col = (j / g.c_in) % g.w, row = j / (g.c_in * g.w);
  for (int64_t py = 0; py < g.k; ++py) {
    const int64_t oy = row * g.stride + py - g.pad;
    if (oy < 0 || oy >= g.out_h) continue;
    for (int64_t px = 0; px < g.k; ++px) {
      const int64_t ox = col * g.stride + px - g.pad;
      if (ox < 0 || ox >= g.out_w) continue;
      fn(((c * g.k + py) * g.k + px) * g.c_out, (oy * g.out_w + ox) * g.c_out);
    }
  }
}

class SparseTransposedConvOp : public OpKernel {
 public:
  explicit SparseTransposedConvOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("stride", &stride_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    ConvGeometry g;
    if (!Geometry(ctx, x, kernel, stride_, &g)) return;
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({g.batch, g.out_h, g.out_w, g.c_out}), &y));
    const float* __restrict xs = x.flat<float>().data();
    const float* __restrict ks = kernel.flat<float>().data();
    float* __restrict ys = y->flat<float>().data();
    const int64_t map_size = g.h * g.w * g.c_in, out_size = g.out_h * g.out_w * g.c_out;
    auto paint = [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        float* __restrict out = ys + b * out_size;
        std::memset(out, 0, sizeof(float) * out_size);
        const float* __restrict xb = xs + b * map_size;
        for (int64_t j = 0; j < map_size; ++j) {
          const float value = xb[j];
          if (value == 0.0f) continue;  // the units TopK and ReLU dropped
          ForEachTap(g, j, [&](int64_t tap_at, int64_t pixel_at) {
            const float* __restrict tap = ks + tap_at;
            float* __restrict pixel = out + pixel_at;
#pragma omp simd
            for (int64_t n = 0; n < g.c_out; ++n) pixel[n] += value * tap[n];
          });
        }
      }
    };
    ::tensorflow::Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
                        ctx->device()->tensorflow_cpu_worker_threads()->workers, g.batch,
                        map_size + out_size * 4, paint);
  }

 private:
  int64_t stride_;
};

class MaskedTransposedConvTOp : public OpKernel {
 public:
  explicit MaskedTransposedConvTOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("stride", &stride_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    ConvGeometry g;
    if (!Geometry(ctx, mask, kernel, stride_, &g)) return;
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == g.batch &&
                         grad.dim_size(1) == g.out_h && grad.dim_size(2) == g.out_w &&
                         grad.dim_size(3) == g.c_out,
                absl::InvalidArgumentError(
                    "MaskedTransposedConvT needs g [batch, h*stride, w*stride, c_out], got " +
                    grad.shape().DebugString()));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mask.shape(), &y));
    const float* __restrict gs = grad.flat<float>().data();
    const float* __restrict ks = kernel.flat<float>().data();
    const float* __restrict ms = mask.flat<float>().data();
    float* __restrict ys = y->flat<float>().data();
    const int64_t map_size = g.h * g.w * g.c_in, out_size = g.out_h * g.out_w * g.c_out;
    auto read_back = [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* __restrict gb = gs + b * out_size;
        for (int64_t j = 0; j < map_size; ++j) {
          float sum = 0.0f;
          if (ms[b * map_size + j] != 0.0f) {  // only the kept units get a gradient
            ForEachTap(g, j, [&](int64_t tap_at, int64_t pixel_at) {
              const float* __restrict tap = ks + tap_at;
              const float* __restrict pixel = gb + pixel_at;
              float part = 0.0f;
#pragma omp simd reduction(+ : part)
              for (int64_t n = 0; n < g.c_out; ++n) part += pixel[n] * tap[n];
              sum += part;
            });
          }
          ys[b * map_size + j] = sum;
        }
      }
    };
    ::tensorflow::Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
                        ctx->device()->tensorflow_cpu_worker_threads()->workers, g.batch,
                        map_size + out_size * 4, read_back);
  }

 private:
  int64_t stride_;
};

REGISTER_KERNEL_BUILDER(Name("SparseRowsMatmul").Device(::tensorflow::DEVICE_CPU),
                        SparseRowsMatmulOp);
REGISTER_KERNEL_BUILDER(Name("MaskedMatmulT").Device(::tensorflow::DEVICE_CPU),
                        MaskedMatmulTOp);
REGISTER_KERNEL_BUILDER(Name("SparseTransposedConv").Device(::tensorflow::DEVICE_CPU),
                        SparseTransposedConvOp);
REGISTER_KERNEL_BUILDER(Name("MaskedTransposedConvT").Device(::tensorflow::DEVICE_CPU),
                        MaskedTransposedConvTOp);

}  // namespace sparse_gen_tf
