// CUDA implementations of the fusedopt ops (schemas in csrc/ops.cpp).
#pragma once

#include <optional>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cuda {

void adam_(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& exp_avgs,
    const TensorList& exp_avg_sqs,
    const TensorList& max_exp_avg_sqs,
    const TensorList& steps,
    const TensorList& master_params,
    double lr,
    std::optional<Tensor> lr_tensor,
    double beta1,
    double beta2,
    double eps,
    double weight_decay,
    bool decoupled,
    bool amsgrad,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm);

void sgd_(
    const TensorList& params,
    const TensorList& grads,
    const TensorList& momentum_buffers,
    const TensorList& momentum_first,
    const TensorList& master_params,
    double lr,
    std::optional<Tensor> lr_tensor,
    double momentum,
    double dampening,
    double weight_decay,
    bool nesterov,
    bool maximize,
    std::optional<Tensor> grad_scale,
    std::optional<Tensor> found_inf,
    std::optional<Tensor> sumsq,
    double max_norm);

void grad_stats_(
    const TensorList& grads,
    std::optional<Tensor> grad_scale,
    Tensor found_inf,
    Tensor sumsq,
    std::optional<Tensor> workspace);

void unscale_(const TensorList& grads, Tensor found_inf, Tensor inv_scale);

}  // namespace cuda
}  // namespace fusedopt
