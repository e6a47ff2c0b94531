/* Per-tensor L2 norms of many contiguous CPU arrays in one call (gradient monitoring).
 *
 * Built and loaded like focal.c (losslab/native/build.py). Sums of squares are accumulated in
 * double (as torch's CPU reductions do), so no float32 overflow below ~1.8e19 per element;
 * NaN / Inf entries give NaN / Inf norms, as torch.linalg.vector_norm does.
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

/* grouped_norms: out[t] = ||x_t|| (t < count), out[count] = sqrt(sum_t ||x_t||^2) (the total),
 * out[count + 1 + g] = sqrt(sum over t in group g of ||x_t||^2) (a layer's norm). */
#define DEFINE_GROUPED_NORMS(NAME, T)                                                          \
  void NAME(const T *const *ptrs, const int64_t *lens, int64_t count, const int64_t *group,    \
            int64_t groups, float *out) {                                                      \
    double total = 0.0;                                                                        \
    double *sums = calloc(groups > 0 ? (size_t)groups : 1, sizeof(double));                   \
    if (sums == NULL) { /* no memory: report NaN rather than fail */                           \
      for (int64_t t = 0; t <= count + groups; t++) out[t] = NAN;                              \
      return;                                                                                  \
    }                                                                                          \
    for (int64_t t = 0; t < count; t++) {                                                      \
      const T *x = ptrs[t];                                                                    \
      double acc = 0.0;                                                                        \
      _Pragma("omp simd reduction(+:acc)")                                                     \
      for (int64_t i = 0; i < lens[t]; i++) acc += (double)x[i] * (double)x[i];                \
      out[t] = (float)sqrt(acc);                                                               \
      total += acc;                                                                            \
      sums[group[t]] += acc;                                                                   \
    }                                                                                          \
    out[count] = (float)sqrt(total);                                                           \
    for (int64_t g = 0; g < groups; g++) out[count + 1 + g] = (float)sqrt(sums[g]);            \
    free(sums);                                                                                \
  }

#define DEFINE_DIFF_NORMS(NAME, T)                                                             \
  void NAME(const T *const *a, const T *const *b, const int64_t *lens, int64_t count,          \
            float *out) {                                                                      \
    for (int64_t t = 0; t < count; t++) {                                                      \
      const T *x = a[t], *y = b[t];                                                            \
      double dd = 0.0, aa = 0.0;                                                               \
      _Pragma("omp simd reduction(+:dd, aa)")                                                  \
      for (int64_t i = 0; i < lens[t]; i++) {                                                  \
        double xi = (double)x[i], d = xi - (double)y[i];                                       \
        dd += d * d;                                                                           \
        aa += xi * xi;                                                                         \
      }                                                                                        \
      out[t] = (float)sqrt(dd);                                                                \
      out[count + t] = (float)sqrt(aa);                                                        \
    }                                                                                          \
  }

DEFINE_GROUPED_NORMS(grouped_norms_f32, float)
DEFINE_GROUPED_NORMS(grouped_norms_f64, double)
DEFINE_DIFF_NORMS(diff_norms_f32, float)
DEFINE_DIFF_NORMS(diff_norms_f64, double)
