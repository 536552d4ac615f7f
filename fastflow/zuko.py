"""One-pass sampling of zuko's masked autoregressive flows (MAF and NSF), unchanged.

zuko inverts a MaskedAutoregressiveTransform with `passes` full passes of its hyper-network
(one per feature for a MAF): sampling a D-dimensional flow costs D network passes per
transform. fastflow reads each transform's MaskedMLP (its masks, weights and activation)
and runs the same inverse with fastflow's one-pass sampler (fastflow.ops.made_sample): the
arithmetic of about one network pass per transform, with zuko's own parametrisations.

    import fastflow.zuko
    x = fastflow.zuko.sample(flow, (16,), context=c)   # zuko: flow(c).sample((16,))
    handle = fastflow.zuko.patch(flow)                 # flow(c).sample(...) now runs it
    handle.remove()                                    # back to zuko's own

Supported: flows whose transforms are all MaskedAutoregressiveTransform (zuko.flows.MAF,
zuko.flows.NSF, or built by hand) with
- univariate MonotonicAffineTransform or MonotonicRQSTransform (any bins, bound and slope,
  also through functools.partial, as NSF makes it);
- a MaskedMLP, with or without residual blocks, with ReLU, LeakyReLU (slope 0.01), ELU
  (α = 1), SiLU, Tanh or Sigmoid as its activation;
- any order, passes or adjacency (the plan follows the masks, so a transform of fewer
  passes than features, coupling-like, is sampled in as many steps), with or without
  context.
Anything else is refused with a TypeError naming the part; nothing falls back silently.
"""

from __future__ import annotations

import functools
import inspect
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.made_model import MaskedLayer
from .ops.made_sample import run_made_sample

try:
    import zuko
    from zuko.flows.autoregressive import MaskedAutoregressiveTransform
    from zuko.lazy import Flow, LazyComposedTransform
    from zuko.nn import MaskedLinear, MaskedMLP, Residual
    from zuko.transforms import MonotonicAffineTransform, MonotonicRQSTransform
except ImportError:  # pragma: no cover - exercised where zuko is not installed
    zuko = None

__all__ = ["sample", "sample_and_log_prob", "patch"]

# zuko's activation modules and the op's names for them, with the settings the kernels use.
_ACTIVATIONS = {nn.ReLU: ("relu", {}), nn.LeakyReLU: ("leaky_relu", {"negative_slope": 0.01}),
                nn.ELU: ("elu", {"alpha": 1.0}), nn.SiLU: ("silu", {}), nn.Tanh: ("tanh", {}),
                nn.Sigmoid: ("sigmoid", {})}


def _require_zuko(caller: str) -> None:
    if zuko is None:
        raise ImportError(f"fastflow.zuko.{caller} needs zuko: pip install 'fastflow[zuko]'")


def _univariate_rule(transform, caller: str) -> tuple[str, tuple[float, ...]]:
    """The op's rule and rule_params for the transform's univariate (a class, or a
    functools.partial of one with keyword arguments), its defaults read from zuko."""
    univariate, keywords = transform.univariate, {}
    if isinstance(univariate, functools.partial):
        if univariate.args:
            raise TypeError(f"fastflow.zuko.{caller}: a univariate partial with positional "
                            f"arguments is not supported, got {univariate!r}")
        univariate, keywords = univariate.func, dict(univariate.keywords)
    if univariate not in (MonotonicAffineTransform, MonotonicRQSTransform):
        raise TypeError(f"fastflow.zuko.{caller}: univariate "
                        f"{getattr(univariate, '__name__', univariate)!r} is not supported (only "
                        f"MonotonicAffineTransform, zuko's MAF, and MonotonicRQSTransform, NSF)")
    defaults = {name: p.default for name, p in inspect.signature(univariate).parameters.items()
                if p.default is not inspect.Parameter.empty}
    unknown = set(keywords) - set(defaults)
    if unknown:
        raise TypeError(f"fastflow.zuko.{caller}: univariate arguments {sorted(unknown)} are not "
                        f"supported")
    settings = {**defaults, **keywords}
    slope = float(settings["slope"])
    if not 0 < slope < 1:
        raise ValueError(f"fastflow.zuko.{caller}: the univariate's slope must be in (0, 1), got "
                         f"{slope}")
    shapes = [tuple(s) for s in transform.shapes]
    if univariate is MonotonicAffineTransform:
        if shapes != [(), ()]:
            raise TypeError(f"fastflow.zuko.{caller}: MonotonicAffineTransform needs shapes "
                            f"[(), ()], got {shapes}")
        return "zuko_affine_inverse", (math.log(slope),)
    if len(shapes) != 3 or any(len(s) != 1 for s in shapes) or \
            not shapes[0][0] == shapes[1][0] == shapes[2][0] + 1 or shapes[2][0] < 0:
        raise TypeError(f"fastflow.zuko.{caller}: MonotonicRQSTransform needs shapes [(K,), (K,), "
                        f"(K - 1,)], got {shapes}")
    return "zuko_rqs_inverse", (float(settings["bound"]), math.log(slope))


def _activation_name(module, caller: str) -> str:
    kind = _ACTIVATIONS.get(type(module))
    if kind is None or any(getattr(module, k) != v for k, v in kind[1].items()):
        raise TypeError(f"fastflow.zuko.{caller}: activation {module!r} is not supported "
                        f"(ReLU, LeakyReLU(0.01), ELU(1.0), SiLU, Tanh or Sigmoid)")
    return kind[0]


def _read_hyper(transform, features: int, caller: str):
    """The transform's MaskedMLP as the op's layers: (layers on the features, the context's
    part of the first layer or None, activation, activated, skips). A Residual block
    (residual=True) is two layers, the second adding the block's input."""
    hyper = transform.hyper
    if not isinstance(hyper, MaskedMLP):
        raise TypeError(f"fastflow.zuko.{caller}: the transform's hyper-network must be a "
                        f"zuko MaskedMLP, got {type(hyper).__name__}")
    layers, activated, skips, activations = [], [], [], set()
    pending = False  # an activation since the last layer

    def add(module, where, skip=-1):
        if not isinstance(module, MaskedLinear):
            raise TypeError(f"fastflow.zuko.{caller}: {where} must be a MaskedLinear, got "
                            f"{type(module).__name__}")
        if layers:
            activated.append(pending)
        elif pending:
            raise TypeError(f"fastflow.zuko.{caller}: the MaskedMLP must start with a "
                            f"MaskedLinear")
        layers.append(module)
        skips.append(skip)

    for index, module in enumerate(hyper):
        if isinstance(module, Residual):
            inner = list(module)
            if pending or not layers or len(inner) != 3:
                raise TypeError(f"fastflow.zuko.{caller}: module {index} of the MaskedMLP must "
                                f"be a Residual(MaskedLinear, activation, MaskedLinear) after a "
                                f"MaskedLinear")
            source = len(layers) - 1
            add(inner[0], f"module {index}.0 of the MaskedMLP")
            activations.add(_activation_name(inner[1], caller))
            pending = True
            add(inner[2], f"module {index}.2 of the MaskedMLP", skip=source)
        elif isinstance(module, MaskedLinear):
            add(module, f"module {index} of the MaskedMLP")
        else:
            activations.add(_activation_name(module, caller))
            if pending:
                raise TypeError(f"fastflow.zuko.{caller}: module {index} of the MaskedMLP is a "
                                f"second activation in a row")
            pending = True
            continue
        pending = False
    if pending or not layers or len(activations) > 1:
        raise TypeError(f"fastflow.zuko.{caller}: the MaskedMLP must end with a MaskedLinear "
                        f"and use one kind of activation")
    first = layers[0]
    stack = [MaskedLayer(first.weight.detach()[:, :features],
                         None if first.bias is None else first.bias.detach(),
                         first.mask[:, :features])]
    stack += [MaskedLayer(m.weight.detach(), None if m.bias is None else m.bias.detach(), m.mask)
              for m in layers[1:]]
    context = None
    if first.weight.shape[1] > features:
        context = (first.weight.detach()[:, features:], first.mask[:, features:])
    return stack, context, activations.pop() if activations else "relu", activated, skips


def _features(transform) -> int:
    """The transform's feature count D: its hyper-network has `total` outputs per feature."""
    return transform.hyper[-1].weight.shape[0] // transform.total


def _transforms(flow, caller: str) -> list:
    """The flow's MaskedAutoregressiveTransforms, first to last."""
    _require_zuko(caller)
    if not isinstance(flow, Flow):
        raise TypeError(f"fastflow.zuko.{caller}: expected a zuko.flows.Flow (MAF, NSF, ...), "
                        f"got {type(flow).__name__}")
    transform = flow.transform
    parts = list(transform.transforms) if isinstance(transform, LazyComposedTransform) else [transform]
    for index, part in enumerate(parts):
        if not isinstance(part, MaskedAutoregressiveTransform):
            raise TypeError(f"fastflow.zuko.{caller}: transform {index} is a "
                            f"{type(part).__name__}; only MaskedAutoregressiveTransform "
                            f"(MAF, NSF) is supported")
    return parts


def _invert(transform, y: torch.Tensor, context: torch.Tensor | None, caller: str):
    """(x [N, D], log |det ∂x/∂y| [N]) of one transform's inverse, y [N, D] and context
    [N, C] or None."""
    features = y.shape[1]
    rule, params = _univariate_rule(transform, caller)
    layers, context_part, activation, activated, skips = _read_hyper(transform, features, caller)
    context_bias = None
    if context_part is not None:
        if context is None:
            raise ValueError(f"fastflow.zuko.{caller}: the flow takes a context of "
                             f"{context_part[0].shape[1]} features; none was given")
        weight, mask = context_part
        if context.shape[1] != weight.shape[1]:
            raise ValueError(f"fastflow.zuko.{caller}: expected a context of {weight.shape[1]} "
                             f"features, got {context.shape[1]}")
        context_bias = F.linear(context.to(weight.dtype), weight * mask)
    elif context is not None:
        raise ValueError(f"fastflow.zuko.{caller}: the flow takes no context; one was given")
    x, log_terms, _ = run_made_sample(transform, layers, y, rule, caller, rule_params=params,
                                      activation=activation, activated=activated, skips=skips,
                                      context_biases=[context_bias] + [None] * (len(layers) - 1),
                                      interleaved=True, masks_by_version=True)
    return x, log_terms


def _flat_context(context, batch_shape: torch.Size, caller: str) -> torch.Tensor | None:
    if context is None:
        return None
    if not isinstance(context, torch.Tensor) or context.dim() < 1:
        raise TypeError(f"fastflow.zuko.{caller}: context must be a tensor [..., C], got "
                        f"{type(context).__name__}")
    try:
        context = context.expand(*batch_shape, context.shape[-1])
    except RuntimeError:
        raise ValueError(f"fastflow.zuko.{caller}: context of shape {tuple(context.shape)} does "
                         f"not broadcast to the samples' batch shape {tuple(batch_shape)}") from None
    return context.reshape(-1, context.shape[-1])


@torch.no_grad()
def _sample(flow, shape, context, z, caller: str, want_log_prob: bool):
    parts = _transforms(flow, caller)
    distribution = flow(context)
    if z is None:
        z = distribution.base.sample(torch.Size(shape))
    elif not isinstance(z, torch.Tensor):
        raise TypeError(f"fastflow.zuko.{caller}: z must be a tensor, got {type(z).__name__}")
    features = _features(parts[0])
    if z.dim() < 1 or z.shape[-1] != features:
        raise ValueError(f"fastflow.zuko.{caller}: z must be [..., {features}], got "
                         f"{tuple(z.shape)}")
    flat_context = _flat_context(context, z.shape[:-1], caller)
    x = z.reshape(-1, features)
    log_det = torch.zeros(x.shape[0], dtype=torch.float64 if x.dtype == torch.float64
                          else torch.float32, device=x.device)
    for transform in reversed(parts):
        x, log_terms = _invert(transform, x, flat_context, caller)
        log_det = log_det + log_terms
    x = x.reshape(z.shape)
    if not want_log_prob:
        return x
    return x, distribution.base.log_prob(z) - log_det.reshape(z.shape[:-1]).to(z.dtype)


def sample(flow, shape=(), context: torch.Tensor | None = None,
           z: torch.Tensor | None = None) -> torch.Tensor:
    """Samples of a zuko flow, x = flow(context).transform.inv(z), in about one network pass
    per transform.

    Args:
        flow: a zuko.flows.Flow of MaskedAutoregressiveTransforms (MAF, NSF).
        shape: the sample shape, as flow(context).sample(shape).
        context: the context [..., C] of a conditional flow (None otherwise).
        z: base noise [..., D]; drawn from the flow's base when not given (then x has shape
           (*shape, *context's batch shape, D), as zuko's sample).

    Returns:
        x, of z's shape. For the same z it equals zuko's own inverse, to rounding.
    """
    return _sample(flow, shape, context, z, "sample", want_log_prob=False)


def sample_and_log_prob(flow, shape=(), context: torch.Tensor | None = None,
                        z: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, log p(x | context)): the samples of `sample` and their log-density, which the
    inverse gives for free (zuko's rsample_and_log_prob)."""
    return _sample(flow, shape, context, z, "sample_and_log_prob", want_log_prob=True)


def _needs_graph(flow) -> bool:
    return torch.is_grad_enabled() and any(p.requires_grad for p in flow.parameters())


def _fast_sampling_hook(flow, args, kwargs, distribution):
    """Forward hook of a patched flow: the returned distribution samples through fastflow."""
    context = args[0] if args else kwargs.get("c")
    rsample, rsample_and_log_prob = distribution.rsample, distribution.rsample_and_log_prob

    def fast_rsample(shape=()):
        # fastflow's sampler has no gradient: where one is wanted, zuko's own runs.
        if _needs_graph(flow):
            return rsample(shape)
        return sample(flow, shape, context)

    def fast_rsample_and_log_prob(shape=()):
        if _needs_graph(flow):
            return rsample_and_log_prob(shape)
        return sample_and_log_prob(flow, shape, context)

    distribution.rsample = fast_rsample
    distribution.rsample_and_log_prob = fast_rsample_and_log_prob
    return distribution


_PATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def patch(flow):
    """Makes flow(context).sample(shape), .rsample(shape) and .rsample_and_log_prob(shape)
    run fastflow's sampler (rsample and rsample_and_log_prob stay zuko's own where a
    gradient is wanted: with grad enabled and parameters that require it). The flow is
    checked now (TypeError for an unsupported part). Returns a handle: handle.remove()
    undoes the patch. Patching twice returns the same handle."""
    _require_zuko("patch")
    for transform in _transforms(flow, "patch"):
        _univariate_rule(transform, "patch")
        _read_hyper(transform, _features(transform), "patch")
    handle = _PATCHED.get(flow)
    if handle is None or handle.id not in flow._forward_hooks:
        handle = flow.register_forward_hook(_fast_sampling_hook, with_kwargs=True)
        _PATCHED[flow] = handle
    return handle
