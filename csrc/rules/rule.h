// What every update rule declares (csrc/rules/<name>.h), and the few generic
// kinds its per-tensor counter can be. The list op, the plan ops, the CPU
// kernel tables and the CUDA launches are written once over these traits; no
// code outside a rule's header knows which rule it runs.
//
//   struct XRule {
//     static constexpr const char* kName;        // the ops: <name>_, <name>_plan_make
//     static constexpr int kStates;              // state lists at most (exp_avg, ...)
//     static constexpr int kMinStates;           // state lists at least (kernels exist for each count between)
//     static constexpr const char* kStateNames[kStates];  // for messages ("exp_avgs", ...)
//     static constexpr bool kStateSigned[kStates];  // 8-bit states: signed map (moments) or unsigned (squares)
//     static constexpr Counter kCounter;         // the per-tensor counter, if any
//     static constexpr const char* kCounterName; // for messages ("steps"; any text for kNone)
//     static constexpr int kHyper;               // packed doubles, in the order of Hyper's fields
//     struct Hyper {...};  static Hyper unpack(const double* h);   // validates nothing: Python did
//     static int active_states(const Hyper&);    // how many state lists a call carries
//     struct Consts {...};                       // per tensor, from the hyper, lr and counter
//     FO_HD static Consts consts(const Hyper&, const LrArg&, float counter);
//     template <int kActive, class V>
//     FO_HD static void update(V& p, V g, V (&s)[kStates], const Consts&);  // kStates >= 1
//   };
//
// Each state list is loaded as float into s[0..kActive), updated, and stored
// back through the state codec (csrc/codecs.h): a rule never sees storage.
#pragma once

#include "../math/common.h"

namespace fusedopt {

// The per-tensor counter every call carries a list of (or none).
enum class Counter : int {
  kNone = 0,     // no list (Lion)
  kStepF32 = 1,  // float32 step count; consts() gets it already advanced; +1 after an applied step (Adam, Adagrad)
  kFirstBool = 2,  // bool "state never applied"; consts() gets 1 or 0; cleared after an applied step (SGD)
};

// The lr a step runs with: its value in double and whether it came as a
// float32 tensor (torch's Adam then derives its constants in float32).
struct LrArg {
  double value;
  bool f32;
};

// A tensor's counter as Rule::consts takes it: the step this update completes
// (kStepF32), 1 or 0 for a state never applied (kFirstBool; no list: 0), or 0.
template <class Rule>
FO_HD FO_INLINE float counter_value(const void* counter) {
  if constexpr (Rule::kCounter == Counter::kStepF32) {
    return *static_cast<const float*>(counter) + 1.0f;
  } else if constexpr (Rule::kCounter == Counter::kFirstBool) {
    return counter != nullptr && *static_cast<const bool*>(counter) ? 1.0f : 0.0f;
  } else {
    return 0.0f;
  }
}

}  // namespace fusedopt
