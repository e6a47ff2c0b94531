/* A CPython extension module (`_losslab_fastcall`) that makes the per-step gradient-norm call
 * of gradient monitoring without ctypes (built and loaded by losslab/native/build.py, which
 * adds Python's include folder; without Python.h, norms.py keeps its ctypes call).
 *
 *   grouped_norms(tensors, dtype, count, fn, ptrs, lens, groups, num_groups, out)
 *       -> list[float] | None
 *   diff_norms(tensors, dtype, count, fn, ptrs, other_ptrs, lens, out) -> list[float] | None
 *       (the update ratio's pass: the tensors against fixed snapshot buffers, see below)
 *
 * For each tensor: its dtype must be `dtype` (identity), `is_cpu` and `is_contiguous()` true
 * and `numel()` the planned size, else None (the caller's torch path). Its `data_ptr()` goes into `ptrs`; then
 * fn = norms.c's grouped_norms_<dtype>(ptrs, lens, count, groups, num_groups, out) runs, and
 * out[0 .. count + num_groups] is returned as Python floats. `fn`, `ptrs`, `lens`, `groups`
 * and `out` are addresses of the arrays a `GroupedNorms` plan owns (norms.py); `count` must
 * equal len(tensors) (ValueError otherwise). The same checks and the same kernel as the ctypes
 * call, without its per-argument conversions and the Python loops around it: 12-16 us less
 * per training step on the default MLP, where the call comes right after backward. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef void (*grouped_fn)(const void *const *, const int64_t *, int64_t, const int64_t *,
                           int64_t, float *);
typedef void (*diff_fn)(const void *const *, const void *const *, const int64_t *, int64_t,
                        float *);

static PyObject *s_dtype, *s_is_cpu, *s_is_contiguous, *s_numel, *s_data_ptr;

/* 1: attribute / method result is true (or `is` expected), 0: not, -1: error */
static int check(PyObject *t, PyObject *name, int call, PyObject *expected) {
  PyObject *v = call ? PyObject_CallMethodNoArgs(t, name) : PyObject_GetAttr(t, name);
  if (v == NULL) return -1;
  int ok = expected != NULL ? v == expected : PyObject_IsTrue(v);
  Py_DECREF(v);
  return ok;
}

/* Check every tensor (dtype `dtype`, is_cpu, is_contiguous(), numel() == lens[i]) and put its
 * data_ptr() into ptrs: 1 done, 0 a tensor declined, -1 a Python error. */
static int fill(PyObject *tensors, PyObject *dtype, Py_ssize_t count, const int64_t *lens,
                void **ptrs) {
  if (!PyList_Check(tensors)) {
    PyErr_SetString(PyExc_TypeError, "losslab fastcall: tensors must be a list");
    return -1;
  }
  if (PyList_GET_SIZE(tensors) != count) {
    PyErr_Format(PyExc_ValueError, "losslab fastcall: %zd tensors for a plan of %zd",
                 PyList_GET_SIZE(tensors), count);
    return -1;
  }
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *t = PyList_GET_ITEM(tensors, i);
    int ok = check(t, s_dtype, 0, dtype);
    if (ok == 1) ok = check(t, s_is_cpu, 0, NULL);
    if (ok == 1) ok = check(t, s_is_contiguous, 1, NULL);
    if (ok != 1) return ok;
    PyObject *n = PyObject_CallMethodNoArgs(t, s_numel);
    if (n == NULL) return -1;
    long long numel = PyLong_AsLongLong(n);
    Py_DECREF(n);
    if (numel == -1 && PyErr_Occurred()) return -1;
    if (numel != lens[i]) return 0;  /* another size than planned: the kernel must not read it */
    PyObject *p = PyObject_CallMethodNoArgs(t, s_data_ptr);
    if (p == NULL) return -1;
    ptrs[i] = PyLong_AsVoidPtr(p);
    Py_DECREF(p);
    if (PyErr_Occurred()) return -1;
  }
  return 1;
}

static PyObject *floats(const float *out, Py_ssize_t n) {
  PyObject *list = PyList_New(n);
  if (list == NULL) return NULL;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *f = PyFloat_FromDouble((double)out[i]);
    if (f == NULL) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, i, f);
  }
  return list;
}

static PyObject *grouped_norms(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 9) {
    PyErr_SetString(PyExc_TypeError, "grouped_norms() takes 9 arguments");
    return NULL;
  }
  Py_ssize_t count = PyLong_AsSsize_t(args[2]);
  grouped_fn fn = (grouped_fn)PyLong_AsVoidPtr(args[3]);
  void **ptrs = (void **)PyLong_AsVoidPtr(args[4]);
  const int64_t *lens = (const int64_t *)PyLong_AsVoidPtr(args[5]);
  const int64_t *groups = (const int64_t *)PyLong_AsVoidPtr(args[6]);
  Py_ssize_t num_groups = PyLong_AsSsize_t(args[7]);
  float *out = (float *)PyLong_AsVoidPtr(args[8]);
  if (PyErr_Occurred()) return NULL;
  if (fn == NULL || ptrs == NULL || lens == NULL || groups == NULL || out == NULL ||
      num_groups < 0) {
    PyErr_SetString(PyExc_ValueError, "grouped_norms(): a null array or negative size");
    return NULL;
  }
  int ok = fill(args[0], args[1], count, lens, ptrs);
  if (ok < 0) return NULL;
  if (ok == 0) Py_RETURN_NONE;
  fn((const void *const *)ptrs, lens, (int64_t)count, groups, (int64_t)num_groups, out);
  return floats(out, count + 1 + num_groups);
}

/* diff_norms(tensors, dtype, count, fn, ptrs, other_ptrs, lens, out) -> list[float] | None:
 * fn = norms.c's diff_norms_<dtype>(ptrs, other_ptrs, lens, count, out) after the tensors'
 * pointers are filled in (`other_ptrs`, e.g. fixed snapshot buffers, are the caller's);
 * returns [||a_t - b_t|| for each t, then ||a_t|| for each t]. */
static PyObject *diff_norms(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 8) {
    PyErr_SetString(PyExc_TypeError, "diff_norms() takes 8 arguments");
    return NULL;
  }
  Py_ssize_t count = PyLong_AsSsize_t(args[2]);
  diff_fn fn = (diff_fn)PyLong_AsVoidPtr(args[3]);
  void **ptrs = (void **)PyLong_AsVoidPtr(args[4]);
  void **other = (void **)PyLong_AsVoidPtr(args[5]);
  const int64_t *lens = (const int64_t *)PyLong_AsVoidPtr(args[6]);
  float *out = (float *)PyLong_AsVoidPtr(args[7]);
  if (PyErr_Occurred()) return NULL;
  if (fn == NULL || ptrs == NULL || other == NULL || lens == NULL || out == NULL) {
    PyErr_SetString(PyExc_ValueError, "diff_norms(): a null array");
    return NULL;
  }
  int ok = fill(args[0], args[1], count, lens, ptrs);
  if (ok < 0) return NULL;
  if (ok == 0) Py_RETURN_NONE;
  fn((const void *const *)ptrs, (const void *const *)other, lens, (int64_t)count, out);
  return floats(out, 2 * count);
}

static PyMethodDef methods[] = {
    {"grouped_norms", (PyCFunction)(void (*)(void))grouped_norms, METH_FASTCALL,
     "grouped_norms(tensors, dtype, count, fn, ptrs, lens, groups, num_groups, out)"},
    {"diff_norms", (PyCFunction)(void (*)(void))diff_norms, METH_FASTCALL,
     "diff_norms(tensors, dtype, count, fn, ptrs, other_ptrs, lens, out)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_losslab_fastcall",
                                    "losslab's per-step gradient-norm call (see fastcall.c)",
                                    -1, methods};

PyMODINIT_FUNC PyInit__losslab_fastcall(void) {
  s_dtype = PyUnicode_InternFromString("dtype");
  s_is_cpu = PyUnicode_InternFromString("is_cpu");
  s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
  s_numel = PyUnicode_InternFromString("numel");
  s_data_ptr = PyUnicode_InternFromString("data_ptr");
  if (!s_dtype || !s_is_cpu || !s_is_contiguous || !s_numel || !s_data_ptr) return NULL;
  return PyModule_Create(&module);
}
