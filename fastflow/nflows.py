"""One-pass sampling of nflows' masked affine autoregressive flows (MAF), unchanged.

nflows inverts a MaskedAffineAutoregressiveTransform with D full passes of its MADE: sampling
a D-dimensional MAF costs D network passes per transform. fastflow reads each MADE (masks,
weights, activation, context layer) and runs the same inverse with fastflow's one-pass
sampler (fastflow.ops.made_sample): the arithmetic of about one network pass per transform,
with nflows' scale parametrisation (softplus(u) + epsilon, epsilon read from the transform).

    import fastflow.nflows
    x = fastflow.nflows.sample(flow, 16, context=c)     # nflows: flow.sample(16, context=c)
    x, log_prob = fastflow.nflows.sample_and_log_prob(flow, 16)
    x, logabsdet = fastflow.nflows.inverse(flow._transform, noise, context)

Supported: nflows Flows whose transform is any composition (CompositeTransform) of
- MaskedAffineAutoregressiveTransform, with residual blocks (nflows' default) or without
  (then any random_mask), no batch norm, no dropout while training, and one of relu,
  leaky_relu (0.01), elu (1.0), silu, tanh, sigmoid as activation: fastflow's one-pass
  sampler;
- transforms that are not autoregressive (permutations, LU linear, batch norm, couplings):
  their own inverse, which is one pass already.
Other autoregressive transforms are refused with a TypeError naming the part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops.made_model import MaskedLayer
from .ops.made_sample import ACTIVATIONS, run_made_sample

try:
    import nflows
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import (AutoregressiveTransform,
                                                  MaskedAffineAutoregressiveTransform)
    from nflows.transforms.base import CompositeTransform
except ImportError:  # pragma: no cover - exercised where nflows is not installed
    nflows = None

__all__ = ["sample", "sample_and_log_prob", "inverse"]

# nflows takes its activation as a function; the op's names for those it can run.
_ACTIVATIONS = {F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu", F.elu: "elu",
                F.silu: "silu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                F.sigmoid: "sigmoid"}


def _require_nflows(caller: str) -> None:
    if nflows is None:
        raise ImportError(f"fastflow.nflows.{caller} needs nflows: pip install "
                          f"'fastflow[nflows]'")


def _activation_name(function, caller: str) -> str:
    name = _ACTIVATIONS.get(function)
    if name is None:
        raise TypeError(f"fastflow.nflows.{caller}: activation "
                        f"{getattr(function, '__name__', function)!r} is not supported "
                        f"({', '.join(ACTIVATIONS)})")
    return name


def _read_made(made, caller: str):
    """The MADE as the op's layers: (masked layers, activation name, activated, skips, the
    blocks' context layers by layer index). Without residual blocks: the initial layer, each
    block's layer, the final layer, all activated. With them (nflows' default): each block is
    two layers, activation(x) -> linear -> (+ context) -> activation -> linear, the second
    adding the block's input x; the final layer reads the last block's output itself."""
    activation = _activation_name(made.activation, caller)
    modules, activated, skips, block_contexts = [made.initial_layer], [], [-1], {}
    for index, block in enumerate(made.blocks):
        norms = getattr(block, "batch_norm", None) or getattr(block, "batch_norm_layers", None)
        if norms is not None:
            raise TypeError(f"fastflow.nflows.{caller}: block {index} of the MADE uses batch "
                            f"norm (use_batch_norm=True), which is not supported")
        if block.dropout.p > 0 and block.training:
            raise TypeError(f"fastflow.nflows.{caller}: block {index} of the MADE applies "
                            f"dropout in training mode; call flow.eval() before sampling")
        if block.activation is not made.activation:
            raise TypeError(f"fastflow.nflows.{caller}: block {index} of the MADE has another "
                            f"activation than the MADE")
        if made.use_residual_blocks:
            source = len(modules) - 1
            if hasattr(block, "context_layer"):
                block_contexts[len(modules)] = block.context_layer
            modules += list(block.linear_layers)
            activated += [True, True]
            skips += [-1, source]
        else:
            modules.append(block.linear)
            activated.append(True)
            skips.append(-1)
    modules.append(made.final_layer)
    activated.append(not made.use_residual_blocks)
    skips.append(-1)
    layers = [MaskedLayer(m.weight.detach(), None if m.bias is None else m.bias.detach(), m.mask)
              for m in modules]
    return layers, activation, activated, skips, block_contexts


def _affine_inverse(transform, inputs: torch.Tensor, context: torch.Tensor | None, caller: str):
    made = transform.autoregressive_net
    layers, activation, activated, skips, block_contexts = _read_made(made, caller)
    context_layer = getattr(made, "context_layer", None)
    context_biases = [None] * len(layers)
    if context_layer is not None:
        if context is None:
            raise ValueError(f"fastflow.nflows.{caller}: the MADE takes a context of "
                             f"{context_layer.in_features} features; none was given")
        if context.dim() != 2 or context.shape != (inputs.shape[0], context_layer.in_features):
            raise ValueError(f"fastflow.nflows.{caller}: expected a context of shape "
                             f"[{inputs.shape[0]}, {context_layer.in_features}], got "
                             f"{tuple(context.shape)}")
        context = context.to(layers[0].weight.dtype)
        # The initial layer adds activation(context layer); each residual block's first
        # layer adds its own context layer's output.
        context_biases[0] = ACTIVATIONS[activation](context_layer(context)).detach()
        for index, block_context_layer in block_contexts.items():
            context_biases[index] = block_context_layer(context).detach()
    x, logabsdet, _ = run_made_sample(transform, layers, inputs, "nflows_affine_inverse", caller,
                                      rule_params=(float(transform._epsilon),),
                                      activation=activation, activated=activated, skips=skips,
                                      context_biases=context_biases, interleaved=True,
                                      masks_by_version=True)
    return x, logabsdet.to(x.dtype)


@torch.no_grad()
def _inverse(transform, inputs, context, caller: str):
    if type(transform) is CompositeTransform:
        logabsdet = inputs.new_zeros(inputs.shape[0])
        for part in reversed(transform._transforms):
            inputs, part_logabsdet = _inverse(part, inputs, context, caller)
            logabsdet = logabsdet + part_logabsdet
        return inputs, logabsdet
    if type(transform) is MaskedAffineAutoregressiveTransform:
        return _affine_inverse(transform, inputs, context, caller)
    if isinstance(transform, AutoregressiveTransform):
        raise TypeError(f"fastflow.nflows.{caller}: {type(transform).__name__} is not "
                        f"supported (of the autoregressive transforms, only "
                        f"MaskedAffineAutoregressiveTransform)")
    return transform.inverse(inputs, context)


def inverse(transform, inputs: torch.Tensor, context: torch.Tensor | None = None):
    """(outputs, logabsdet) of transform.inverse(inputs, context) for an nflows transform
    (a CompositeTransform, a MaskedAffineAutoregressiveTransform, ...), its masked affine
    autoregressive parts in one pass each."""
    _require_nflows("inverse")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2:
        raise TypeError(f"fastflow.nflows.inverse: inputs must be a [N, D] tensor, got "
                        f"{getattr(inputs, 'shape', type(inputs).__name__)}")
    return _inverse(transform, inputs, context, "inverse")


@torch.no_grad()
def _sample(flow, num_samples: int, context, noise, caller: str, want_log_prob: bool):
    _require_nflows(caller)
    if not isinstance(flow, Flow):
        raise TypeError(f"fastflow.nflows.{caller}: expected an nflows Flow, got "
                        f"{type(flow).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"fastflow.nflows.{caller}: num_samples must be a non-negative int, "
                         f"got {num_samples!r}")
    embedded = flow._embedding_net(context) if context is not None else None
    if noise is None:
        # nflows' distributions refuse 0 samples: one drawn and dropped.
        noise = flow._distribution.sample(max(num_samples, 1), context=embedded)
        noise = noise[..., :num_samples, :]
    else:
        batch = () if embedded is None else (embedded.shape[0],)
        if not isinstance(noise, torch.Tensor) or noise.shape[:-1] != (*batch, num_samples):
            raise ValueError(f"fastflow.nflows.{caller}: noise must be "
                             f"[{', '.join(map(str, (*batch, num_samples)))}, D] (as the "
                             f"flow's distribution samples it), got "
                             f"{tuple(getattr(noise, 'shape', ()))}")
    flat_noise = noise.reshape(-1, noise.shape[-1])
    flat_context = None if embedded is None else embedded.repeat_interleave(num_samples, dim=0)
    samples, logabsdet = _inverse(flow._transform, flat_noise, flat_context, caller)
    samples = samples.reshape(noise.shape)
    if not want_log_prob:
        return samples
    log_prob = flow._distribution.log_prob(flat_noise, context=flat_context) - logabsdet
    return samples, log_prob.reshape(noise.shape[:-1])


def sample(flow, num_samples: int, context: torch.Tensor | None = None,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Samples of an nflows Flow, as flow.sample(num_samples, context), in about one network
    pass per autoregressive transform.

    Args:
        flow: an nflows.flows.base.Flow (see the module docstring for its transforms).
        num_samples: samples per context row.
        context: [B, C] or None, before the flow's embedding net.
        noise: base noise as flow._distribution.sample(num_samples, context) draws it,
            [num_samples, D] or with context [B, num_samples, D]; drawn when not given.

    Returns:
        [num_samples, D], or [B, num_samples, D] with context: for the same noise, nflows'
        own flow._transform.inverse of it, to rounding.
    """
    return _sample(flow, num_samples, context, noise, "sample", want_log_prob=False)


def sample_and_log_prob(flow, num_samples: int, context: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, log p(samples | context)), as flow.sample_and_log_prob: the log-density comes
    free with the inverse."""
    return _sample(flow, num_samples, context, noise, "sample_and_log_prob",
                   want_log_prob=True)
