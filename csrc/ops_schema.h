// Every fastflow op schema, in one place: defined into the `fastflow` library by
// registration.cpp, and into the tests' CPU emulation of the CUDA kernels (tests/cuda_cpu),
// which registers the same bindings under a library of its own.
#pragma once

#include <torch/library.h>

namespace fastflow {

inline void define_ops(torch::Library& m) {
  // squeeze_2x2 (multi-scale RealNVP, NCHW): [B, C, H, W] -> [B, 4C, H/2, W/2], or back when reverse.
  m.def("squeeze_2x2(Tensor x, bool reverse=False, bool alt_order=False) -> Tensor");

  // Vector affine coupling (the MLP and 2-D RealNVPs), see csrc/affine_coupling.h:
  // (x, raw s, raw t, mask) -> (y, logdet [B]).
  m.def("affine_coupling(Tensor x, Tensor s, Tensor t, Tensor mask, bool tanh_scale, "
        "bool reverse) -> (Tensor, Tensor)");
  m.def("affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor s, "
        "Tensor t, Tensor mask, bool tanh_scale, bool reverse) -> (Tensor, Tensor, Tensor)");
  // The same with s and t packed as st = [s | t] of shape [B, 2D] (the 2-D RealNVP's st_net
  // output): the backward writes one gradient for st, no concatenation.
  m.def("affine_coupling_packed(Tensor x, Tensor st, Tensor mask, bool tanh_scale, "
        "bool reverse) -> (Tensor, Tensor)");
  m.def("affine_coupling_packed_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, "
        "Tensor st, Tensor mask, bool tanh_scale, bool reverse) -> (Tensor, Tensor)");

  // Image affine coupling (multi-scale RealNVP), see csrc/image_coupling_index.h:
  // (x, st, rescale weight) -> (y, logdet [B]); backward -> (grad_x, grad_st, grad_rescale).
  m.def("image_coupling(Tensor x, Tensor st, Tensor rescale, bool channel_wise, "
        "bool reverse_mask, bool reverse) -> (Tensor, Tensor)");
  m.def("image_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor st, "
        "Tensor rescale, bool channel_wise, bool reverse_mask, bool reverse) -> "
        "(Tensor, Tensor, Tensor)");

  // Dequantize-and-logit (multi-scale RealNVP's _pre_process), see csrc/dequantize_logit.h:
  // (x in [0, 1], uniform noise, data constraint [1]) -> (logits, sldj [B]).
  m.def("dequantize_logit(Tensor x, Tensor noise, Tensor constraint) -> (Tensor, Tensor)");

  // Masked linear (MADE's MaskedLinear), see csrc/masked_linear.h: y = x·(W⊙M)ᵀ + b with
  // the mask as a matrix, or given by degrees (M[j, k] = in_degrees[k] <= out_degrees[j]),
  // whose all-zero weight tiles are skipped. The backward returns (grad_x, grad_weight,
  // grad_bias); grad_bias = Σ grad_y is returned whether or not there is a bias, and
  // grad_x is an empty [0] tensor unless input_grad (MADE's first layer needs none).
  m.def("masked_linear(Tensor x, Tensor weight, Tensor mask, Tensor? bias) -> Tensor");
  m.def("masked_linear_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mask, "
        "bool input_grad) -> (Tensor, Tensor, Tensor)");
  m.def("degree_masked_linear(Tensor x, Tensor weight, Tensor in_degrees, Tensor out_degrees, "
        "Tensor? bias) -> Tensor");
  m.def("degree_masked_linear_backward(Tensor grad_y, Tensor x, Tensor weight, "
        "Tensor in_degrees, Tensor out_degrees, bool input_grad) -> (Tensor, Tensor, Tensor)");
  // A MADE's whole network (see csrc/masked_linear.h): masked linear layers with ReLU
  // between, the masks given as staircases in one int64 plan (each unit layer's order, then
  // each layer's row prefixes). Returns (y, hidden, sorted_weights); the last two, the ReLU
  // outputs and the masked weights in degree order, are for the backward and empty unless
  // keep_for_backward. The backward returns (grad_x, grad_weights, grad_biases); grad_x is
  // an empty [0] tensor unless input_grad.
  m.def("made_mlp(Tensor x, Tensor[] weights, Tensor?[] biases, Tensor plan, "
        "bool keep_for_backward) -> (Tensor, Tensor[], Tensor[])");
  m.def("made_mlp_backward(Tensor grad_y, Tensor x, Tensor[] hidden, Tensor[] sorted_weights, "
        "Tensor plan, bool input_grad) -> (Tensor, Tensor[], Tensor[])");

  // One-pass autoregressive sampling, see csrc/made_sample.h: the masked linear layers and
  // their wiring (activations, residual skips, per-sample context terms), their plan from fastflow/ops/made_plan.py and the noise [N, D] (uniforms, base
  // normals, or data for the inverse rules) -> (values [N, D], log terms [N], the last layer's
  // outputs [N, out] of the finished samples). No gradient.
  m.def("made_sample(Tensor noise, Tensor[] weights, Tensor?[] biases, Tensor[] masks, "
        "Tensor[] unit_orders, Tensor[] push_ranges, Tensor[] finalize_offsets, "
        "Tensor step_offsets, str rule, float[] rule_params, str activation, bool[] activated, "
        "int[] skips, Tensor?[] context_biases) -> (Tensor, Tensor, Tensor)");
}

}  // namespace fastflow
