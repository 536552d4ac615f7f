"""What the runner measures: every op and model, its sizes in the quick and full
configurations, the reference and fused functions, and how a provider's result is checked.

A Case is one op at one size. `case.make(device, dtype, mode)` builds a Setup: the inputs,
the reference function and the fused one (both called as fn(*inputs)), the tensors whose
gradients fwd+bwd computes, and how to check a provider's output. Unless a case checks its
own way, a provider is judged by fastflow.accuracy's rule against the reference run again
in float64 on the same inputs: the same function on float64 copies of the inputs for an op
(its captured masks promote), a float64 copy of the reference model for a model. Sizes are chosen per
configuration: quick fits a 2-core CPU in a few minutes, full is for a GPU.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import fastflow
from fastflow import reference
from fastflow.accuracy import float64_copy
from fastflow.ops.affine_coupling import affine_coupling_reference
from fastflow.ops.dequantize_logit import dequantize_logit_reference
from fastflow.ops.image_coupling import image_coupling_reference
from fastflow.ops.masked_linear import degree_mask, masked_linear_reference

FWD, FWD_BWD, SAMPLE = "fwd", "fwd+bwd", "sample"

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclasses.dataclass
class Setup:
    inputs: tuple
    reference: Callable
    fused: Callable
    # Tensors fwd+bwd differentiates: the same inputs for an op; each model's own parameters.
    reference_leaves: list = dataclasses.field(default_factory=list)
    fused_leaves: list = dataclasses.field(default_factory=list)
    # check(got, expected) -> None, or why got is wrong. None: fastflow.accuracy's rule
    # against the float64 reference.
    check: Callable | None = None
    # Models: the reference model's float64 copy, as a function of the float64 inputs, and
    # its parameters. None: the reference itself on float64 copies of the inputs.
    reference64: Callable | None = None
    reference64_leaves: list = dataclasses.field(default_factory=list)
    # Work per call, for throughput: bytes moved (memory-bound ops) or FLOPs (products).
    nbytes: int | None = None
    flops: int | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    label: str        # the size, as shown in the table
    shape: tuple      # the main input's shape
    size: int         # x axis of the plots: elements of the main input
    make: Callable    # (device, dtype, mode) -> Setup
    series: str = ""  # cases with the same series form one line of the op's plot
    modes: tuple = (FWD, FWD_BWD)
    dtypes: tuple = DTYPES
    compiles: bool = True   # whether torch.compile of the reference is a provider
    # A different function of the same inputs and work (masked linear: F.linear without the
    # mask), timed as the `dense` provider for scale and never checked; None: no such provider.
    dense: Callable | None = None
    exact: bool = False  # a provider must equal the reference bit for bit (moves values only)


def _tensor_bytes(values) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def traffic(inputs, mode, reference_fn) -> int:
    """The least memory traffic of a fused elementwise op: read the inputs and write the
    outputs once; fwd+bwd also reads them again with the output gradients and writes the
    input gradients."""
    with torch.no_grad():
        outputs = _as_tuple(reference_fn(*inputs))
    fwd = _tensor_bytes(inputs) + _tensor_bytes(outputs)
    if mode == FWD:
        return fwd
    grads = _tensor_bytes(v for v in inputs if isinstance(v, torch.Tensor) and v.requires_grad)
    return fwd + _tensor_bytes(inputs) + 2 * _tensor_bytes(outputs) + grads


def _op_setup(inputs, reference_fn, fused_fn, mode, **kw) -> Setup:
    leaves = [v for v in inputs if isinstance(v, torch.Tensor) and v.requires_grad]
    return Setup(inputs, reference_fn, fused_fn, leaves, leaves, **kw)


def _randn(shape, device, dtype, mode):
    return torch.randn(shape, device=device, dtype=dtype, requires_grad=mode == FWD_BWD)


# squeeze_2x2 -------------------------------------------------------------------------

SQUEEZE_VARIANTS = {"": (False, False), "alt": (False, True), "rev": (True, False), "rev-alt": (True, True)}


def _squeeze(shape, variant, modes):
    reverse, alt_order = SQUEEZE_VARIANTS[variant]

    def make(device, dtype, mode):
        b, c, h, w = shape
        x = _randn((b, 4 * c, h // 2, w // 2) if reverse else shape, device, dtype, mode)

        def ref(x):
            return reference.squeeze_2x2(x, reverse=reverse, alt_order=alt_order)

        def fused(x):
            return fastflow.squeeze_2x2(x, reverse=reverse, alt_order=alt_order)
        return _op_setup((x,), ref, fused, mode, nbytes=traffic((x,), mode, ref))
    label = "x".join(map(str, shape)) + (f" {variant}" if variant else "")
    # The reference's alt_order is a convolution with a permutation weight: exact on the
    # CPU, rounded to TF32 by cuDNN on a GPU (see README), hence the tolerance there.
    exact = not alt_order
    return Case("squeeze_2x2", label, shape, int(np.prod(shape)), make, variant, modes=modes,
                exact=exact)


def squeeze_cases(full):
    if full:
        shapes = [(128, 1, 14, 14), (64, 3, 32, 32), (64, 12, 16, 16), (64, 16, 128, 128), (64, 16, 256, 256)]
        return [_squeeze(s, v, (FWD, FWD_BWD)) for v in SQUEEZE_VARIANTS for s in shapes]
    return [_squeeze(s, v, (FWD,)) for v in ("", "alt") for s in [(64, 3, 32, 32), (16, 16, 128, 128)]]


# couplings ----------------------------------------------------------------------------

def _vector_coupling(b, d):
    def make(device, dtype, mode):
        x = _randn((b, d), device, dtype, mode)
        st = _randn((b, 2 * d), device, dtype, mode)
        mask = (torch.arange(d, device=device) % 2).to(dtype)

        def ref(x, st):  # the 2-D RealNVP's form: one conditioner output st = [s | t]
            s, t = st.chunk(2, dim=1)
            return affine_coupling_reference(x, s, t, mask, tanh_scale=True)

        def fused(x, st):
            return fastflow.ops.affine_coupling_packed(x, st, mask, tanh_scale=True)
        return _op_setup((x, st), ref, fused, mode, nbytes=traffic((x, st), mode, ref))
    return Case("affine_coupling", f"{b}x{d}", (b, d), b * d, make)


def vector_coupling_cases(full):
    sizes = [(1024, 2), (128, 784), (4096, 784), (16384, 1024), (65536, 1024)] if full else \
        [(128, 784), (4096, 1024)]
    return [_vector_coupling(b, d) for b, d in sizes]


def _image_coupling(b, c, h, w, channel_wise):
    cond = c // 2 if channel_wise else c

    def make(device, dtype, mode):
        x = _randn((b, c, h, w), device, dtype, mode)
        st = _randn((b, 2 * cond, h, w), device, dtype, mode)
        rescale = _randn((cond, 1, 1), device, dtype, mode)

        def ref(x, st, rescale):
            return image_coupling_reference(x, st, rescale, channel_wise)

        def fused(x, st, rescale):
            return fastflow.ops.image_coupling(x, st, rescale, channel_wise=channel_wise)
        inputs = (x, st, rescale)
        return _op_setup(inputs, ref, fused, mode, nbytes=traffic(inputs, mode, ref))
    series = "channel" if channel_wise else "checkerboard"
    return Case("image_coupling", f"{b}x{c}x{h}x{w} {series}", (b, c, h, w), b * c * h * w, make, series)


def image_coupling_cases(full):
    if full:
        sizes = [(64, 1, 14, 14, False), (64, 4, 7, 7, True), (64, 3, 32, 32, False),
                 (64, 12, 16, 16, True), (64, 16, 128, 128, False), (64, 16, 256, 256, False)]
    else:
        sizes = [(64, 3, 32, 32, False), (16, 16, 128, 128, False)]
    return [_image_coupling(*s) for s in sizes]


def _dequantize_logit(shape):
    def make(device, dtype, mode):
        x = torch.rand(shape, device=device, dtype=dtype)
        noise = torch.rand(shape, device=device, dtype=dtype)
        constraint = torch.tensor([0.9], device=device, dtype=dtype)
        inputs = (x, noise, constraint)
        return _op_setup(inputs, dequantize_logit_reference, fastflow.ops.dequantize_logit, mode,
                         nbytes=traffic(inputs, mode, dequantize_logit_reference))
    return Case("dequantize_logit", "x".join(map(str, shape)), shape, int(np.prod(shape)), make,
                modes=(FWD,), dtypes=(torch.float32, torch.float64))


def dequantize_logit_cases(full):
    # The multi-scale RealNVP's pre-process on its two image sizes; forward only, as its data has no gradient.
    return [_dequantize_logit(s) for s in [(128, 1, 14, 14), (64, 3, 32, 32)]]


# masked linear ------------------------------------------------------------------------

def _degrees(n, dim, rng):
    """MADE's degrees: 1..D for the input and output layers, random in 1..D-1 for
    hidden units."""
    return torch.arange(1, dim + 1) if n == dim else torch.from_numpy(rng.randint(1, dim, n))


def _masked_linear(op, batch, in_features, out_features, dim):
    strict = out_features == dim  # MADE's output layer: in < out

    def make(device, dtype, mode):
        rng = np.random.RandomState(0)
        in_deg = _degrees(in_features, dim, rng).to(device)
        out_deg = _degrees(out_features, dim, rng).to(device) - int(strict)
        mask = degree_mask(in_deg, out_deg).to(dtype)
        torch.manual_seed(0)
        inputs = (_randn((batch, in_features), device, dtype, mode),
                  _randn((out_features, in_features), device, dtype, mode),
                  _randn((out_features,), device, dtype, mode))

        def ref(x, weight, bias):
            return masked_linear_reference(x, weight, mask, bias)

        if op == "masked_linear":
            def fused(x, weight, bias):
                return fastflow.ops.masked_linear(x, weight, mask, bias)
        else:
            def fused(x, weight, bias):
                return fastflow.ops.degree_masked_linear(x, weight, in_deg, out_deg, bias)
        # Dense FLOPs: what the reference computes, so that all providers compare alike.
        flops = 2 * batch * in_features * out_features * (3 if mode == FWD_BWD else 1)
        return _op_setup(inputs, ref, fused, mode, flops=flops)
    return Case(op, f"b{batch} {in_features}->{out_features}", (batch, in_features),
                batch * in_features, make, f"{in_features}->{out_features}", dense=F.linear)


def masked_linear_cases(op, full):
    layers = [(784, 512), (512, 512), (512, 784)]  # MADE 784-[512, 512]-784
    batches = [16, 256, 4096] if full else [16, 256]
    return [_masked_linear(op, b, i, o, 784) for i, o in layers for b in batches]


# models -------------------------------------------------------------------------------

def _model_pair(ref_cls, fast_cls, *args, device, dtype, np_seed=False):
    if np_seed:  # the reference MADE draws its hidden degrees from numpy's global RNG
        np.random.seed(0)
    torch.manual_seed(0)
    ref = ref_cls(*args).to(device=device, dtype=dtype)
    fast = fast_cls(*args).to(device=device, dtype=dtype)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def _model_setup(ref, fast, run, x, mode, flops=None) -> Setup:
    """fwd+bwd: the gradients of each model's own parameters. The float64 copy is taken
    before any call (which would move a train-mode BatchNorm's running statistics)."""
    ref64 = float64_copy(ref)
    return Setup((x,), lambda x: run(ref, x), lambda x: run(fast, x),
                 list(ref.parameters()) if mode == FWD_BWD else [],
                 list(fast.parameters()) if mode == FWD_BWD else [], flops=flops,
                 reference64=lambda x: run(ref64, x),
                 reference64_leaves=list(ref64.parameters()) if mode == FWD_BWD else [])


def _mlp_flops(batch, sizes):
    """The FLOPs of a dense MLP's forward, sizes = its unit layers' widths."""
    return sum(2 * batch * i * o for i, o in zip(sizes, sizes[1:]))


_GAUSSIAN_MADE_SIZES = [10, 64, 64, 20]  # seed 003's MADE(10, 64, 1): means and log-stds


def _made(batch, hidden, dim):
    sizes = [dim, *hidden, dim]
    dense = _mlp_flops(batch, sizes)

    def make(device, dtype, mode):
        ref, fast = _model_pair(reference.made.MADE, fastflow.nn.MADE, dim, list(hidden), dim,
                                device=device, dtype=dtype, np_seed=True)
        x = (torch.rand(batch, dim, device=device) < 0.5).to(dtype)
        return _model_setup(ref, fast, lambda model, x: model(x), x, mode,
                            flops=dense * (3 if mode == FWD_BWD else 1))
    layers = "-".join(map(str, sizes))
    return Case("made", f"b{batch} {layers}", (batch, dim), batch * dim, make, layers)


def _gaussian_made(batch):
    """The MAF's Gaussian MADE(10, 64, 1) (10 -> 64 -> 64 -> 20): log-density terms of
    real-valued data (MADE.inverse)."""
    sizes = _GAUSSIAN_MADE_SIZES
    dense = _mlp_flops(batch, sizes)

    def make(device, dtype, mode):
        ref, fast = _model_pair(reference.maf.MADE, fastflow.nn.maf.MADE, 10, 64, 1,
                                device=device, dtype=dtype)
        x = torch.randn(batch, 10, device=device, dtype=dtype)
        return _model_setup(ref, fast, lambda model, x: model.inverse(x), x, mode,
                            flops=dense * (3 if mode == FWD_BWD else 1))
    layers = "-".join(map(str, sizes))
    return Case("made", f"b{batch} {layers} (Gaussian)", (batch, 10), batch * 10, make,
                f"{layers} (Gaussian)")


def _maf_log_prob(batch, blocks=5):
    """The MAF of 5 Gaussian MADE(10, 64, 1) blocks with their permutations: log p(x)
    (MAF.log_prob, every block's one-pass inverse)."""
    dense = blocks * _mlp_flops(batch, _GAUSSIAN_MADE_SIZES)

    def make(device, dtype, mode):
        ref, fast = _model_pair(reference.maf.MAF, fastflow.nn.maf.MAF, 10, 64, 1, blocks,
                                device=device, dtype=dtype)
        x = torch.randn(batch, 10, device=device, dtype=dtype)
        return _model_setup(ref, fast, lambda model, x: model.log_prob(x), x, mode,
                            flops=dense * (3 if mode == FWD_BWD else 1))
    return Case("made", f"b{batch} MAF {blocks}x10-64 log_prob", (batch, 10), batch * 10, make,
                f"MAF {blocks}x10-64 log_prob")


def made_cases(full):
    batches = [16, 256, 4096] if full else [16, 256]
    return ([_made(b, (512, 512), 784) for b in batches] + [_gaussian_made(b) for b in batches]
            + [_maf_log_prob(b) for b in batches])


def _sample_check(uniforms, made):
    """Samples equal the reference loop's except where the uniform is within 1e-6 of the
    probability, where rounding may decide either way."""
    def check(got, expected):
        with torch.no_grad():
            near = (uniforms - torch.sigmoid(made(expected))).abs() < 1e-6
        bad = int(((got != expected) & ~near).sum())
        return f"{bad} samples differ from the reference loop" if bad else None
    return check


def _made_sample(batch, hidden, dim):
    def make(device, dtype, mode):
        np.random.seed(0)
        torch.manual_seed(0)
        made = reference.made.MADE(dim, list(hidden), dim).to(device=device, dtype=dtype)
        uniforms = torch.rand(batch, dim, device=device, dtype=dtype)
        return Setup((uniforms,),
                     lambda u: reference.made.generate_samples(made, batch, uniforms=u),
                     lambda u: fastflow.made_sample(made, batch, uniforms=u)[0],
                     check=_sample_check(uniforms, made))
    layers = "-".join(map(str, [dim, *hidden, dim]))
    return Case("made_sample", f"b{batch} {layers}", (batch, dim), batch * dim, make, layers, modes=(SAMPLE,),
                dtypes=(torch.float32, torch.float64), compiles=False)


def made_sample_cases(full):
    # The reference loop runs D full passes: the MADE's D = 784 takes seconds per call on a
    # small CPU, so the quick configuration uses a smaller MADE.
    if full:
        return [_made_sample(b, (512, 512), 784) for b in (1, 16, 256, 1024)]
    return [_made_sample(b, (256, 256), 64) for b in (16, 256)]


def _maf_sample(batch, dim, hidden, blocks):
    def make(device, dtype, mode):
        ref, fast = _model_pair(reference.maf.MAF, fastflow.nn.maf.MAF, dim, hidden, 1, blocks,
                                device=device, dtype=dtype)
        z = torch.randn(batch, dim, device=device, dtype=dtype)
        ref64 = float64_copy(ref)
        return Setup((z,), lambda z: ref.sample(batch, z), lambda z: fast.sample(batch, z)[0],
                     reference64=lambda z: ref64.sample(batch, z))
    return Case("maf_sample", f"b{batch} {blocks}x{dim}-{hidden}", (batch, dim), batch * dim, make,
                f"{blocks}x{dim}-{hidden}", modes=(SAMPLE,), dtypes=(torch.float32, torch.float64), compiles=False)


def maf_sample_cases(full):
    if full:
        return [_maf_sample(b, 784, 512, 5) for b in (16, 256)]
    return [_maf_sample(16, 64, 128, 5)]


def _peer_sample(op, name, hidden, batch, dim, transforms, build, peer_inverse,
                 fastflow_inverse):
    """A flow of a peer library (zuko, nflows) sampled from the same base noise z by the
    library's own inverse (the `reference` provider) and by fastflow's (the others); judged
    against the library's own inverse of a float64 copy of the flow."""
    def make(device, dtype, mode):
        torch.manual_seed(0)
        flow = build(dim, transforms).to(device=device, dtype=dtype).eval()
        flow64 = float64_copy(flow)
        z = torch.randn(batch, dim, device=device, dtype=dtype)
        return Setup((z,), torch.no_grad()(lambda z: peer_inverse(flow, z)),
                     lambda z: fastflow_inverse(flow, z),
                     reference64=torch.no_grad()(lambda z: peer_inverse(flow64, z)))
    label = f"{name} {transforms}x{dim}-{hidden}"
    return Case(op, f"b{batch} {label}", (batch, dim), batch * dim, make, label,
                modes=(SAMPLE,), dtypes=(torch.float32, torch.float64), compiles=False)


def _peer_sizes(full):
    """(batch, dim) of the peers' cases. Their own samplers run D network passes per
    transform: at D = 784 several seconds per call on a small CPU, so the quick
    configuration uses D = 64."""
    return [(16, 64), (16, 784)] if full else [(16, 64)]


def zuko_sample_cases(full):
    try:
        import zuko
    except ImportError:
        return []
    import fastflow.zuko

    def zuko_inverse(flow, z):
        return flow().transform.inv(z)

    def fastflow_inverse(flow, z):
        return fastflow.zuko.sample(flow, z=z)

    def maf(dim, transforms):
        return zuko.flows.MAF(dim, transforms=transforms, hidden_features=[512, 512])

    def nsf(dim, transforms):
        return zuko.flows.NSF(dim, transforms=transforms, hidden_features=[512, 512])
    return [_peer_sample("zuko_sample", name, "512-512", batch, dim, 5, build, zuko_inverse,
                         fastflow_inverse)
            for batch, dim in _peer_sizes(full) for name, build in (("MAF", maf), ("NSF", nsf))]


def nflows_sample_cases(full):
    try:
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms import (CompositeTransform, MaskedAffineAutoregressiveTransform,
                                       ReversePermutation)
    except ImportError:
        return []
    import fastflow.nflows

    def maf(dim, transforms):
        """nflows' default MADE: two residual blocks of 512 units."""
        parts = []
        for index in range(transforms):
            if index:
                parts.append(ReversePermutation(dim))
            parts.append(MaskedAffineAutoregressiveTransform(dim, 512))
        return Flow(CompositeTransform(parts), StandardNormal([dim]))

    def nflows_inverse(flow, z):
        return flow._transform.inverse(z)[0]

    def fastflow_inverse(flow, z):
        return fastflow.nflows.inverse(flow._transform, z)[0]
    return [_peer_sample("nflows_sample", "MAF", "512x2 residual blocks", batch, dim, 5, maf,
                         nflows_inverse, fastflow_inverse) for batch, dim in _peer_sizes(full)]


def _mlp_realnvp_log_prob(model, x):
    """The MLP RealNVP's log_prob on x already dequantized: its torch.rand_like noise would differ
    under torch.compile (which has its own random stream), the rest is the same."""
    log_det_sum = 0
    for layer in model.layers:
        x, log_det = layer(x)
        log_det_sum = log_det_sum + log_det
    return torch.distributions.Normal(0, 1).log_prob(x).sum(dim=1) + log_det_sum


def _realnvp2d_log_prob(model, x):
    z, log_det = model(x)
    return -0.5 * (z ** 2).sum(1) + log_det


def _multiscale_loss(model, x):
    z, sldj = model.flows(*model._pre_process(x, noise=torch.full_like(x, 0.5)), reverse=False)
    return reference.multiscale.RealNVPLoss()(z, sldj).reshape(1)


def _realnvp(name, ref_cls, fast_cls, args, run, shape, rand):
    def make(device, dtype, mode):
        ref, fast = _model_pair(ref_cls, fast_cls, *args, device=device, dtype=dtype)
        torch.manual_seed(1)
        x = (torch.rand if rand else torch.randn)(shape, device=device, dtype=dtype)
        return _model_setup(ref, fast, run, x, mode)
    return Case("realnvp", f"{name} b{shape[0]}", shape, int(np.prod(shape)), make, name,
                dtypes=(torch.float32, torch.float64))


def realnvp_cases(full):
    blocks = 8 if full else 2
    batch14, batch32 = (64, 64) if full else (16, 4)
    cases = [
        _realnvp("2-D", reference.realnvp2d.RealNVP, fastflow.nn.realnvp2d.RealNVP,
                 (2, 128, 6), _realnvp2d_log_prob, (1024, 2), rand=False),
        _realnvp("MLP 784", reference.mlp_realnvp.RealNVP, fastflow.nn.mlp_realnvp.RealNVP,
                 (784, 256, 8), _mlp_realnvp_log_prob, (128, 784), rand=False),
        _realnvp("multi-scale 1x14x14", reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP,
                 (14, 1, SimpleNamespace(num_scales=2, mid_channels=64, num_blocks=blocks)),
                 _multiscale_loss, (batch14, 1, 14, 14), rand=True),
    ]
    if full:
        cases.append(_realnvp("multi-scale 3x32x32", reference.multiscale.RealNVP, fastflow.nn.multiscale.RealNVP,
                              (32, 3, SimpleNamespace(num_scales=2, mid_channels=64, num_blocks=blocks)),
                              _multiscale_loss, (batch32, 3, 32, 32), rand=True))
    return cases


OPS = {
    "squeeze_2x2": squeeze_cases,
    "affine_coupling": vector_coupling_cases,
    "image_coupling": image_coupling_cases,
    "dequantize_logit": dequantize_logit_cases,
    "masked_linear": lambda full: masked_linear_cases("masked_linear", full),
    "degree_masked_linear": lambda full: masked_linear_cases("degree_masked_linear", full),
    "made": made_cases,
    "made_sample": made_sample_cases,
    "maf_sample": maf_sample_cases,
    "zuko_sample": zuko_sample_cases,
    "nflows_sample": nflows_sample_cases,
    "realnvp": realnvp_cases,
}


def cases(ops, full: bool) -> list[Case]:
    """The cases of the named ops (keys of OPS), in OPS order. The quick configuration
    compiles the reference (torch.compile: seconds to minutes per case from cold caches) for
    the first, smallest case of each op only."""
    selected = []
    for op in OPS:
        if op in ops:
            op_cases = OPS[op](full)
            if not full:
                op_cases = [dataclasses.replace(c, compiles=c.compiles and i == 0)
                            for i, c in enumerate(op_cases)]
            selected += op_cases
    return selected
