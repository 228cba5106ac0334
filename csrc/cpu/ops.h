// CPU implementations of the fusedopt ops (schemas in csrc/ops.cpp).
#pragma once

#include <optional>
#include <string>

#include <torch/csrc/stable/c/shim.h>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cpu {

#include "../op_decls.inc"

std::string cpu_isa();

// step plans (plan_ops.cpp)
int64_t adam_plan_make(StableListHandle params, StableListHandle grads, StableListHandle exp_avgs,
                       StableListHandle exp_avg_sqs, StableListHandle max_exp_avg_sqs, StableListHandle steps,
                       StableListHandle master_params, bool amsgrad);
int64_t sgd_plan_make(StableListHandle params, StableListHandle grads, StableListHandle momentum_buffers,
                      StableListHandle momentum_first, StableListHandle master_params, bool has_momentum);
bool plan_bind(StableListHandle grads, int64_t plan);
void plan_grad_stats_(int64_t plan, std::optional<Tensor> grad_scale, Tensor found_inf, Tensor sumsq,
                      double max_value);
void adam_plan_step_(const Tensor& anchor, int64_t plan, double lr, std::optional<Tensor> lr_tensor, double beta1,
                     double beta2, double eps, double weight_decay, bool decoupled, bool maximize,
                     std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
                     double max_norm, double max_value);
void sgd_plan_step_(const Tensor& anchor, int64_t plan, double lr, std::optional<Tensor> lr_tensor, double momentum,
                    double dampening, double weight_decay, bool nesterov, bool maximize,
                    std::optional<Tensor> grad_scale, std::optional<Tensor> found_inf, std::optional<Tensor> sumsq,
                    double max_norm, double max_value);
void plan_free(const Tensor& anchor, int64_t plan);

}  // namespace cpu
}  // namespace fusedopt
