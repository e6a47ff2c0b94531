/* Fused focal-loss kernels: loss, its sum and dL/dz in ONE pass over the logits.
 *
 * Built on first use by losslab/native/build.py (cc -O3 -march=native, glibc's libmvec for
 * the SIMD exp / log / log1p / pow) and called through ctypes; every function is a plain loop over
 * contiguous CPU arrays, so `#pragma omp simd` vectorises it (no OpenMP runtime is linked).
 * The formulas are the ones documented in losslab/losses/functional.py; tests compare both
 * against torch's composite and gradcheck them in float64.
 *
 * Binary (sigmoid), logits z, targets y in [0, 1] (hard or soft):
 *   e = exp(-|z|), p = sigma(z), pn = 1 - p  (both from e: no cancellation)
 *   ce = -y log p - (1 - y) log(1 - p) = log1p(e) + ((1 - y) z if z >= 0 else -y z)
 *   q = 1 - p_t = y pn + (1 - y) p,  w = q^gamma (q q, or exp(gamma log q)),  at = k alpha_t
 *   FL = at w ce
 *   dFL/dz = at w [ (p - y) + gamma (1 - 2y) ce (p pn / q) ]   with p pn / q in [0, 1]
 *   (p - y is formed as p (1 - y) - pn y, exact for hard labels at saturated logits).
 * Multi-class (softmax), logits z [n, c], labels y [n]:
 *   log p_y = z_y - m - log sum_j exp(z_j - m),  q = -expm1(log p_y),  w = q^gamma
 *   FL = -k alpha_y w log p_y
 *   dFL/dz_j = K (p_j - [j = y]),  K = k alpha_y w (1 + gamma p_y (-log p_y) / q)
 *   with -log p_y / q = -log(1 - q) / q >= 1 finite (q > 0) and the term 0 at q = 0.
 * `k` is the reduction's factor (1/n for the mean, 1 for sum / none). Each function returns the
 * sum of the (k-scaled) losses; `loss` (per sample) and `grad` may be NULL.
 * Multi-class functions return NaN and set *bad to the row of a label outside [0, c).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* glibc's libmvec provides SIMD versions of these; declaring them lets the loops vectorise */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float log1pf(float);
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log1p(double);
#pragma omp declare simd notinbranch
double log(double);

#define INLINE static inline __attribute__((always_inline))

/* one binary loop; G2 (gamma == 2), LOSS and GRAD are compile-time constants at each call */
#define BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, G2, LOSS, GRAD)                              \
  do {                                                                                         \
    _Pragma("omp simd reduction(+:acc)")                                                       \
    for (int64_t i = 0; i < n; i++) {                                                          \
      T zi = z[i], yi = (T)y[i];                                                               \
      T e = EXP(-ABS(zi));                                                                     \
      T r = (T)1 / ((T)1 + e);                                                                 \
      T er = e * r;                                                                            \
      int pos = zi >= (T)0;                                                                    \
      T p = pos ? r : er;                                                                      \
      T pn = pos ? er : r;                                                                     \
      T lg = LOG1P(e);                                                                         \
      T ce = lg + (pos ? ((T)1 - yi) * zi : -yi * zi);                                         \
      T q = yi * pn + ((T)1 - yi) * p;                                                         \
      T at = ka + kd * yi;                                                                     \
      /* log q: for hard labels -(log1p(e) + |z| if the prediction is wrong, else 0) */        \
      T lq = HARD ? -(lg + (((yi != (T)0) == pos) ? ABS(zi) : (T)0)) : LOG(q);                 \
      T w = G2 ? q * q : (q > (T)0 ? EXP(gamma * lq) : (T)0);                                  \
      T atw = at * w;                                                                          \
      T l = atw * ce;                                                                          \
      acc += (double)l;                                                                        \
      if (LOSS) loss[i] = l;                                                                   \
      if (GRAD) {                                                                              \
        T d = p * ((T)1 - yi) - pn * yi;                                                       \
        T ratio = q > (T)0 ? p * pn / q : (T)0;                                                \
        grad[i] = atw * (d + gamma * ((T)1 - (T)2 * yi) * ce * ratio);                         \
      }                                                                                        \
    }                                                                                          \
  } while (0)

#define DEFINE_BINARY(NAME, T, YT, EXP, LOG1P, LOG, ABS, HARD)                                       \
  double NAME(const T *restrict z, const YT *restrict y, T *restrict loss, T *restrict grad,   \
              int64_t n, T gamma, T ka, T kd) {                                                \
    double acc = 0.0;                                                                          \
    int g2 = gamma == (T)2;                                                                    \
    if (g2 && loss && grad) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 1, 1, 1);                 \
    else if (g2 && grad) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 1, 0, 1);                    \
    else if (g2 && loss) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 1, 1, 0);                    \
    else if (g2) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 1, 0, 0);                            \
    else if (loss && grad) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 0, 1, 1);                  \
    else if (grad) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 0, 0, 1);                          \
    else if (loss) BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 0, 1, 0);                          \
    else BINARY_LOOP(T, YT, EXP, LOG1P, LOG, ABS, HARD, 0, 0, 0);                                    \
    return acc;                                                                                \
  }

DEFINE_BINARY(focal_binary_f32_f32, float, float, expf, log1pf, logf, fabsf, 0)
DEFINE_BINARY(focal_binary_f32_i64, float, int64_t, expf, log1pf, logf, fabsf, 1)
DEFINE_BINARY(focal_binary_f64_f64, double, double, exp, log1p, log, fabs, 0)
DEFINE_BINARY(focal_binary_f64_i64, double, int64_t, exp, log1p, log, fabs, 1)

#define DEFINE_MULTICLASS(NAME, T, EXP, LOG, EXPM1, POW)                                       \
  double NAME(const T *restrict z, const int64_t *restrict y, const T *restrict alpha,         \
              T *restrict loss, T *restrict grad, int64_t n, int64_t c, T gamma, T k,          \
              int64_t *bad) {                                                                  \
    double acc = 0.0;                                                                          \
    int g2 = gamma == (T)2;                                                                    \
    for (int64_t i = 0; i < n; i++) {                                                          \
      const T *zr = z + i * c;                                                                 \
      int64_t yi = y[i];                                                                       \
      if (yi < 0 || yi >= c) {                                                                 \
        *bad = i;                                                                              \
        return NAN;                                                                            \
      }                                                                                        \
      T m = zr[0];                                                                             \
      for (int64_t j = 1; j < c; j++) m = zr[j] > m ? zr[j] : m;                               \
      T s = 0;                                                                                 \
      if (grad) {                                                                              \
        T *gr = grad + i * c;                                                                  \
        _Pragma("omp simd reduction(+:s)")                                                     \
        for (int64_t j = 0; j < c; j++) { T e = EXP(zr[j] - m); gr[j] = e; s += e; }           \
      } else {                                                                                 \
        _Pragma("omp simd reduction(+:s)")                                                     \
        for (int64_t j = 0; j < c; j++) s += EXP(zr[j] - m);                                   \
      }                                                                                        \
      T lpt = zr[yi] - m - LOG(s);                                                             \
      if (lpt > (T)0) lpt = (T)0; /* rounding: log p_y <= 0 */                                \
      T nq = EXPM1(lpt); /* -q */                                                              \
      T q = -nq;                                                                               \
      T w = g2 ? q * q : POW(q, gamma);                                                        \
      T at = alpha ? alpha[yi] : (T)1;                                                         \
      T kaw = k * at * w;                                                                      \
      T l = -kaw * lpt;                                                                        \
      acc += (double)l;                                                                        \
      if (loss) loss[i] = l;                                                                   \
      if (grad) {                                                                              \
        T *gr = grad + i * c;                                                                  \
        T ratio = q > (T)0 ? -lpt / q : (T)0;                                                  \
        T kk = kaw * ((T)1 + gamma * ((T)1 + nq) * ratio);                                     \
        T inv = kk / s;                                                                        \
        _Pragma("omp simd")                                                                    \
        for (int64_t j = 0; j < c; j++) gr[j] *= inv;                                          \
        gr[yi] -= kk;                                                                          \
      }                                                                                        \
    }                                                                                          \
    return acc;                                                                                \
  }

DEFINE_MULTICLASS(focal_multiclass_f32, float, expf, logf, expm1f, powf)
DEFINE_MULTICLASS(focal_multiclass_f64, double, exp, log, expm1, pow)
