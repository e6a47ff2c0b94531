/* Per-tensor L2 norms of many contiguous CPU arrays in one call (gradient monitoring).
 *
 * Built and loaded like focal.c (losslab/native/build.py). float32 sums of squares are summed in
 * float32 over blocks of BLOCK entries (the vector lanes of the compiler's reduction each add
 * BLOCK / lanes squares), and the block sums in double: about 3x faster than a double
 * accumulator (whose conversions and add latency bound the loop) with a relative error of
 * ~1e-7, below the float32 result's own rounding. A block whose float32 sum overflows (entries
 * above ~1e17) is summed again in double, so finite gradients below ~1.8e19 per entry give
 * finite norms, as torch's do; NaN / Inf entries give NaN / Inf norms, as
 * torch.linalg.vector_norm does. float64 arrays are summed in double.
 *
 *   grouped_norms_f32(ptrs, lens, count, group, groups, out): out[t] = sqrt(sum_i x_t[i]^2),
 *                                            then the total and per-group norms
 *   diff_norms_f32(a, b, lens, count, out):  out[t] = sqrt(sum_i (a_t[i] - b_t[i])^2) and
 *                                            out[count + t] = sqrt(sum_i a_t[i]^2): one read
 *                                            of both arrays (update / weight norms).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 2048

static double sumsq_f32(const float *x, int64_t n) {
  double acc = 0.0;
  for (int64_t start = 0; start < n; start += BLOCK) {
    const int64_t stop = start + BLOCK < n ? start + BLOCK : n;
    float s = 0.0f;
    _Pragma("omp simd reduction(+:s) simdlen(16)")  /* 16 lanes: also 2 x 8 on AVX2 */
    for (int64_t i = start; i < stop; i++) s += x[i] * x[i];
    if (!isfinite(s)) { /* overflow (or a NaN/Inf entry, which stays so): redo in double */
      double d = 0.0;
      for (int64_t i = start; i < stop; i++) d += (double)x[i] * (double)x[i];
      acc += d;
    } else {
      acc += (double)s;
    }
  }
  return acc;
}

static double sumsq_f64(const double *x, int64_t n) {
  double acc = 0.0;
  _Pragma("omp simd reduction(+:acc)")
  for (int64_t i = 0; i < n; i++) acc += x[i] * x[i];
  return acc;
}

/* (sum (a - b)^2, sum a^2) in one read of both */
static void diffsq_f32(const float *a, const float *b, int64_t n, double *dd, double *aa) {
  double d_acc = 0.0, a_acc = 0.0;
  for (int64_t start = 0; start < n; start += BLOCK) {
    const int64_t stop = start + BLOCK < n ? start + BLOCK : n;
    float ds = 0.0f, as = 0.0f;
    _Pragma("omp simd reduction(+:ds, as) simdlen(16)")
    for (int64_t i = start; i < stop; i++) {
      const float d = a[i] - b[i];
      ds += d * d;
      as += a[i] * a[i];
    }
    if (!isfinite(ds) || !isfinite(as)) {
      double dd2 = 0.0, aa2 = 0.0;
      for (int64_t i = start; i < stop; i++) {
        const double xi = (double)a[i], d = xi - (double)b[i];
        dd2 += d * d;
        aa2 += xi * xi;
      }
      ds = 0.0f, as = 0.0f;
      d_acc += dd2, a_acc += aa2;
    }
    d_acc += (double)ds, a_acc += (double)as;
  }
  *dd = d_acc, *aa = a_acc;
}

static void diffsq_f64(const double *a, const double *b, int64_t n, double *dd, double *aa) {
  double d_acc = 0.0, a_acc = 0.0;
  _Pragma("omp simd reduction(+:d_acc, a_acc)")
  for (int64_t i = 0; i < n; i++) {
    const double d = a[i] - b[i];
    d_acc += d * d;
    a_acc += a[i] * a[i];
  }
  *dd = d_acc, *aa = a_acc;
}

/* grouped_norms: out[t] = ||x_t|| (t < count), out[count] = sqrt(sum_t ||x_t||^2) (the total),
 * out[count + 1 + g] = sqrt(sum over t in group g of ||x_t||^2) (a layer's norm). */
#define DEFINE_GROUPED_NORMS(NAME, T, SUMSQ)                                                   \
  void NAME(const T *const *ptrs, const int64_t *lens, int64_t count, const int64_t *group,    \
            int64_t groups, float *out) {                                                      \
    double total = 0.0;                                                                        \
    double *sums = calloc(groups > 0 ? (size_t)groups : 1, sizeof(double));                   \
    if (sums == NULL) { /* no memory: report NaN rather than fail */                           \
      for (int64_t t = 0; t <= count + groups; t++) out[t] = NAN;                              \
      return;                                                                                  \
    }                                                                                          \
    for (int64_t t = 0; t < count; t++) {                                                      \
      const double acc = SUMSQ(ptrs[t], lens[t]);                                              \
      out[t] = (float)sqrt(acc);                                                               \
      total += acc;                                                                            \
      sums[group[t]] += acc;                                                                   \
    }                                                                                          \
    out[count] = (float)sqrt(total);                                                           \
    for (int64_t g = 0; g < groups; g++) out[count + 1 + g] = (float)sqrt(sums[g]);            \
    free(sums);                                                                                \
  }

#define DEFINE_DIFF_NORMS(NAME, T, DIFFSQ)                                                     \
  void NAME(const T *const *a, const T *const *b, const int64_t *lens, int64_t count,          \
            float *out) {                                                                      \
    for (int64_t t = 0; t < count; t++) {                                                      \
      double dd, aa;                                                                           \
      DIFFSQ(a[t], b[t], lens[t], &dd, &aa);                                                   \
      out[t] = (float)sqrt(dd);                                                                \
      out[count + t] = (float)sqrt(aa);                                                        \
    }                                                                                          \
  }

DEFINE_GROUPED_NORMS(grouped_norms_f32, float, sumsq_f32)
DEFINE_GROUPED_NORMS(grouped_norms_f64, double, sumsq_f64)
DEFINE_DIFF_NORMS(diff_norms_f32, float, diffsq_f32)
DEFINE_DIFF_NORMS(diff_norms_f64, double, diffsq_f64)
