// An empty Python module, so that `import fusedopt._C` (or _C_cuda) loads the
// shared object and its static initializers register the ops. Written against
// the limited API (abi3): one binary serves every CPython >= 3.10.
#include <Python.h>

#ifndef FO_MODULE_NAME
#error "FO_MODULE_NAME must name the extension module"
#endif

#define FO_CAT_(a, b) a##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)

extern "C" PyMODINIT_FUNC FO_CAT(PyInit_, FO_MODULE_NAME)(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, FO_STR(FO_MODULE_NAME), nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
