// The update rules fusedopt compiles, one line each: X(name, Rule). Everything
// generic (op schemas, CPU kernel tables, CUDA launches, plan ops) is
// instantiated from this list; adding an optimizer adds its header and a line.
#pragma once

#include "adagrad.h"
#include "adam.h"
#include "lion.h"
#include "sgd.h"

#define FUSEDOPT_RULES(X)             \
  X(adam, ::fusedopt::AdamRule)       \
  X(sgd, ::fusedopt::SgdRule)         \
  X(adagrad, ::fusedopt::AdagradRule) \
  X(lion, ::fusedopt::LionRule)
