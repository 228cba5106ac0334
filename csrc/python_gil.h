// The GIL, held once while an op lets go of a call's tensors.
//
// torch keeps a tensor's Python object alive while C++ holds a second
// reference to it (c10's PyObject preservation): dropping that reference takes
// the GIL, once per tensor (TensorImpl::decref_pyobject). An op called from
// Python runs with the GIL released, and a list op lets go of every tensor of
// every list when it returns: thousands of GIL acquisitions per optimizer
// step, a fifth of a list op's time at 2000 tensors. Holding the GIL once
// around the whole release makes each of those a check that this thread holds
// it already.
//
// The libraries link no Python: these are CPython's stable-ABI functions,
// declared weak, so they bind to the interpreter's own when the process has
// one (every process that loads fusedopt through Python) and stay null
// otherwise, in which case nothing is held and torch takes the GIL per tensor
// as before. A thread that Python does not know (no thread state of its own)
// is left alone too: it is not one that released the GIL to call the op, and
// making it take the GIL could only add waiting.
#pragma once

extern "C" {
// PyGILState_STATE is a C enum, int-sized; PyThreadState* is opaque here.
int PyGILState_Ensure(void) __attribute__((weak));
void PyGILState_Release(int) __attribute__((weak));
void* PyGILState_GetThisThreadState(void) __attribute__((weak));
int Py_IsInitialized(void) __attribute__((weak));
}

namespace fusedopt {

class GilForRelease {
 public:
  GilForRelease() {
    if (PyGILState_Ensure == nullptr || PyGILState_Release == nullptr || PyGILState_GetThisThreadState == nullptr ||
        Py_IsInitialized == nullptr || Py_IsInitialized() == 0 || PyGILState_GetThisThreadState() == nullptr) {
      return;
    }
    state_ = PyGILState_Ensure();
    held_ = true;
  }
  GilForRelease(const GilForRelease&) = delete;
  GilForRelease& operator=(const GilForRelease&) = delete;
  ~GilForRelease() {
    if (held_) PyGILState_Release(state_);
  }

 private:
  int state_ = 0;
  bool held_ = false;
};

}  // namespace fusedopt
