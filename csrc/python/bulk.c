/* fusedopt._bulk_c: the per-tensor checks of reused buckets, as C loops.
 *
 * A step that reuses its cached buckets (fusedopt/optim/_reuse_guard.py) must still look at every
 * param each step: its grad, that the params and their state tensors are the
 * ones the buckets hold. Written with map() over builtins that costs 20-90 ns per
 * tensor per check in the interpreter; these loops do the same reads without
 * an interpreter round trip per element. fusedopt/_bulk.py holds the same
 * functions in Python (used when this module is not built, and the reference
 * its tests compare against); the semantics are theirs, element for element.
 *
 * Only CPython's limited API (3.10), so one build serves every later CPython
 * (the abi3 wheel); no torch: tensors are only compared by identity and type.
 */
#define Py_LIMITED_API 0x030A0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The list argument `i` of a call, or NULL with a TypeError set. */
static PyObject* list_arg(PyObject* const* args, Py_ssize_t i, const char* fn) {
  PyObject* a = args[i];
  if (!PyList_Check(a)) {
    PyErr_Format(PyExc_TypeError, "%s: argument %zd must be a list", fn, i + 1);
    return NULL;
  }
  return a;
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char* fn) {
  if (nargs != want) {
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", fn, want, nargs);
    return -1;
  }
  return 0;
}

/* attrs(objs, name) -> [getattr(o, name) for o in objs] */
static PyObject* bulk_attrs(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 2, "attrs") < 0) return NULL;
  PyObject* objs = list_arg(args, 0, "attrs");
  if (objs == NULL) return NULL;
  PyObject* name = args[1];
  const Py_ssize_t n = PyList_Size(objs);
  PyObject* out = PyList_New(n);
  if (out == NULL) return NULL;
  for (Py_ssize_t i = 0; i < n; ++i) {
    /* a getter may run Python code that changes the list: re-read, and hold it */
    PyObject* o = PyList_GetItem(objs, i);
    PyObject* v = NULL;
    if (o != NULL) {
      Py_INCREF(o);
      v = PyObject_GetAttr(o, name);
      Py_DECREF(o);
    }
    if (v == NULL) {
      Py_DECREF(out);
      return NULL;
    }
    PyList_SetItem(out, i, v); /* steals v */
  }
  return out;
}

/* same(a, b) -> len(a) == len(b) and every a[i] is b[i]; `a` may be any
 * iterable (a dict's keys or values), `b` is a list. */
static PyObject* bulk_same(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 2, "same") < 0) return NULL;
  PyObject* b = list_arg(args, 1, "same");
  if (b == NULL) return NULL;
  const Py_ssize_t n = PyList_Size(b);
  if (PyList_Check(args[0])) {
    PyObject* a = args[0];
    if (PyList_Size(a) != n) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (PyList_GetItem(a, i) != PyList_GetItem(b, i)) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
  }
  PyObject* it = PyObject_GetIter(args[0]);
  if (it == NULL) return NULL;
  Py_ssize_t i = 0;
  int same = 1;
  PyObject* x;
  while ((x = PyIter_Next(it)) != NULL) {
    same = i < n && x == PyList_GetItem(b, i);
    Py_DECREF(x);
    ++i;
    if (!same) break;
  }
  Py_DECREF(it);
  if (PyErr_Occurred()) return NULL;
  return PyBool_FromLong(same && i == n);
}

/* all_type(objs, tp) -> every type(o) is tp */
static PyObject* bulk_all_type(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 2, "all_type") < 0) return NULL;
  PyObject* objs = list_arg(args, 0, "all_type");
  if (objs == NULL) return NULL;
  const PyTypeObject* tp = (const PyTypeObject*)args[1];
  const Py_ssize_t n = PyList_Size(objs);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (Py_TYPE(PyList_GetItem(objs, i)) != tp) Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

/* nones_match(objs, mask) -> len equal and (objs[i] is not None) is mask[i] */
static PyObject* bulk_nones_match(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 2, "nones_match") < 0) return NULL;
  PyObject* objs = list_arg(args, 0, "nones_match");
  PyObject* mask = objs == NULL ? NULL : list_arg(args, 1, "nones_match");
  if (mask == NULL) return NULL;
  const Py_ssize_t n = PyList_Size(objs);
  if (PyList_Size(mask) != n) Py_RETURN_FALSE;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* want = PyList_GetItem(objs, i) != Py_None ? Py_True : Py_False;
    if (PyList_GetItem(mask, i) != want) Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

/* take(seq, index) -> [seq[i] for i in index]; seq a list, index a list of
 * ints in range (an index out of range raises IndexError). */
static PyObject* bulk_take(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 2, "take") < 0) return NULL;
  PyObject* seq = list_arg(args, 0, "take");
  PyObject* index = seq == NULL ? NULL : list_arg(args, 1, "take");
  if (index == NULL) return NULL;
  const Py_ssize_t n = PyList_Size(index);
  PyObject* out = PyList_New(n);
  if (out == NULL) return NULL;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const Py_ssize_t at = PyLong_AsSsize_t(PyList_GetItem(index, i));
    PyObject* v = (at == -1 && PyErr_Occurred()) ? NULL : PyList_GetItem(seq, at);
    if (v == NULL) {
      Py_DECREF(out);
      return NULL;
    }
    Py_INCREF(v);
    PyList_SetItem(out, i, v);
  }
  return out;
}

/* items_are(dicts, keys, expected) -> every dicts[i].get(keys[i]) is
 * expected[i]; the three lists are equally long. */
static PyObject* bulk_items_are(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (check_nargs(nargs, 3, "items_are") < 0) return NULL;
  PyObject* dicts = list_arg(args, 0, "items_are");
  PyObject* keys = dicts == NULL ? NULL : list_arg(args, 1, "items_are");
  PyObject* expected = keys == NULL ? NULL : list_arg(args, 2, "items_are");
  if (expected == NULL) return NULL;
  const Py_ssize_t n = PyList_Size(dicts);
  if (PyList_Size(keys) != n || PyList_Size(expected) != n) {
    PyErr_SetString(PyExc_ValueError, "items_are: dicts, keys and expected differ in length");
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* d = PyList_GetItem(dicts, i);
    PyObject* key = PyList_GetItem(keys, i);
    if (d == NULL || key == NULL) return NULL; /* a key's __eq__ shortened a list */
    if (!PyDict_Check(d)) {
      PyErr_Format(PyExc_TypeError, "items_are: dicts[%zd] is not a dict", i);
      return NULL;
    }
    Py_INCREF(d);
    Py_INCREF(key);
    PyObject* v = PyDict_GetItemWithError(d, key); /* borrowed */
    const int same = v != NULL ? v == PyList_GetItem(expected, i) : !PyErr_Occurred() && PyList_GetItem(expected, i) == Py_None;
    Py_DECREF(key);
    Py_DECREF(d);
    if (PyErr_Occurred()) return NULL;
    if (!same) Py_RETURN_FALSE;
  }
  Py_RETURN_TRUE;
}

static PyMethodDef bulk_methods[] = {
    {"attrs", (PyCFunction)(void (*)(void))bulk_attrs, METH_FASTCALL, "[getattr(o, name) for o in objs]"},
    {"same", (PyCFunction)(void (*)(void))bulk_same, METH_FASTCALL, "len equal and a[i] is b[i] for all i"},
    {"all_type", (PyCFunction)(void (*)(void))bulk_all_type, METH_FASTCALL, "type(o) is tp for all o"},
    {"nones_match", (PyCFunction)(void (*)(void))bulk_nones_match, METH_FASTCALL,
     "len equal and (objs[i] is not None) is mask[i] for all i"},
    {"take", (PyCFunction)(void (*)(void))bulk_take, METH_FASTCALL, "[seq[i] for i in index]"},
    {"items_are", (PyCFunction)(void (*)(void))bulk_items_are, METH_FASTCALL,
     "dicts[i].get(keys[i]) is expected[i] for all i"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bulk_module = {
    PyModuleDef_HEAD_INIT, "_bulk_c", "Per-tensor checks of reused buckets, as C loops.", -1, bulk_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bulk_c(void) { return PyModule_Create(&bulk_module); }
