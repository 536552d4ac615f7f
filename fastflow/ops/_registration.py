"""Autograd for a fused op whose gradients come from its own fused backward op."""

from __future__ import annotations

import torch


def register_backward_op(forward: str, backward: str, num_tensors: int) -> None:
    """Autograd for fastflow::<forward>(tensors..., flags...).

    Its first `num_tensors` inputs are tensors, saved for backward; the rest are flags.
    fastflow::<backward>(grads of the outputs..., the saved tensors..., flags...) returns the
    gradients of the leading inputs; the remaining inputs get none.
    """
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:num_tensors])
        ctx.flags = inputs[num_tensors:]

    def backward_formula(ctx, *grad_outputs):
        grads = getattr(torch.ops.fastflow, backward)(*grad_outputs, *ctx.saved_tensors, *ctx.flags)
        return *grads, *([None] * (num_tensors + len(ctx.flags) - len(grads)))

    torch.library.register_autograd(f"fastflow::{forward}", backward_formula,
                                    setup_context=setup_context)
