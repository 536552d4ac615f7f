"""Every CUDA kernel of csrc/cuda, run on the CPU (tests/cuda_cpu) through its real binding
and launcher, against the C++ CPU kernel on the same inputs: forward and backward, every
dtype, partial tiles and odd sizes, batch 0 and 1, strided inputs, grid-stride loops on a
forced small grid, both forms of masked linear (the degree form's staircase skipping
included), made_sample's shared-memory and global-scratch paths. Results that the two
kernels compute with the same arithmetic must agree bit for bit; the others (sums in another
order, another exp) within the dtype's tolerance. Also: the emulator's own checks (launch
limits, shuffles, conversions)."""

import ctypes
import os
import subprocess

import numpy as np
import pytest
import torch

from fastflow import reference
from fastflow.ops import made_plan
from fastflow.ops.made_model import masked_stack
from fastflow.ops.made_sample import MADE_RULES, RULES

import cuda_cpu
from fastflow.accuracy import float64_copy, least_accurate, perturbed
from test_made_sample import INTERLEAVED_RULES, WIRINGS, interleaved_stack, out_of_range_plans
from utils import assert_matches_float64

pytestmark = pytest.mark.cuda_emulated

CPU = torch.ops.fastflow

DTYPES = [pytest.param(d, id=str(d).removeprefix("torch."))
          for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)]


@pytest.fixture(scope="module")
def emulator():
    return cuda_cpu.load()


@pytest.fixture
def emu(emulator):
    emulator.take_launches()  # each test reads the log of its own launches
    return emulator


def assert_like_cpu_kernel(emu, op, args, names):
    """The emulated op against the C++ CPU kernel, by fastflow.accuracy's rule: the truth is
    the CPU kernel on float64 copies of the inputs, and the emulated result may be off by
    max(the dtype's tolerance, 2x the CPU kernel's own error in this dtype): the two sum
    in different orders, so neither is the other's truth. The CPU kernel's error is its
    largest over its run on the inputs and three runs on inputs moved by about one rounding
    (fastflow.accuracy.perturbed): a sum whose terms cancel (image_coupling's grad_rescale
    over a 17x19 plane) can come out nearly exact in one order by luck and 10x further off in
    another, and the perturbed runs measure what rounding does to it."""
    def outputs(values):
        out = getattr(CPU, op)(*values)
        return out if isinstance(out, tuple) else (out,)

    got = getattr(emu.ops, op)(*args)
    got = got if isinstance(got, tuple) else (got,)
    expected = outputs(args)
    truth = outputs([float64_copy(a) for a in args])
    generator = torch.Generator().manual_seed(0)
    runs = [expected] + [outputs(perturbed(args, generator)) for _ in range(3)]
    dtype = next(a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
    assert len(got) == len(expected) == len(names)
    for i, (g, e, t, name) in enumerate(zip(got, expected, truth, names)):
        assert g.shape == e.shape and g.dtype == e.dtype, f"{op} {name}: {g.dtype} {tuple(g.shape)}"
        assert_matches_float64(g, t, f"{op} {name}", dtype=dtype,
                               reference=least_accurate([run[i] for run in runs], t))
    return got


def assert_identical(got, expected, what):
    assert got.shape == expected.shape and got.dtype == expected.dtype, what
    assert torch.equal(got, expected), f"{what}: not bit-identical to the CPU kernel's"


# squeeze_2x2: one thread per output element, grid-stride; bits moved, so identical.

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
@pytest.mark.parametrize("alt_order", [False, True], ids=["plain", "alt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 6, 8), (1, 1, 2, 2), (0, 2, 4, 4), (2, 3, 10, 14)])
def test_squeeze_2x2(emu, shape, dtype, alt_order, reverse):
    b, c, h, w = shape
    if reverse:
        shape = (b, 4 * c, h // 2, w // 2)
    x = torch.randn(shape).to(dtype)
    assert_identical(emu.ops.squeeze_2x2(x, reverse, alt_order), CPU.squeeze_2x2(x, reverse, alt_order),
                     "squeeze_2x2")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
def test_squeeze_2x2_strided_and_small_grid(emu, reverse):
    x = torch.randn(3, 8, 12, 10)
    if reverse:
        x = x[:, :, :, :8]  # [3, 8, 12, 8] viewed from a wider tensor: strided rows
    channels_last = x.contiguous(memory_format=torch.channels_last)
    for alt_order in (False, True):
        for view in (x, channels_last, x.transpose(2, 3).contiguous().transpose(2, 3)):
            with emu.max_blocks(2):  # 2880 elements on 2 blocks of 256 threads
                got = emu.ops.squeeze_2x2(view, reverse, alt_order)
            assert_identical(got, CPU.squeeze_2x2(view.contiguous(), reverse, alt_order), "strided")
    assert all(launch["blocks_run"][0] == 2 for launch in emu.take_launches())


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
def test_squeeze_2x2_64_bit_indices(emu, tmp_path, reverse):
    """An input whose furthest element lies past 2^31 (a batch stride of 2^31, in a sparse
    file mapped copy-on-write: no memory is spent) takes the kernel's 64-bit index path."""
    elements = (1 << 31) + 4096
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(2 * elements)
    storage = torch.from_file(str(path), shared=False, size=elements, dtype=torch.float16)
    shape = (2, 12, 2, 3) if reverse else (2, 3, 4, 6)
    x = storage.as_strided(shape, (1 << 31, 6 * shape[2], shape[3], 1))
    x.copy_(torch.randn(shape).half())
    got = emu.ops.squeeze_2x2(x, reverse, True)
    assert_identical(got, CPU.squeeze_2x2(x.contiguous(), reverse, True), "64-bit indices")
    launch, = emu.take_launches()
    assert "index_t = long" in launch["kernel"], launch["kernel"]


# Vector affine coupling: a warp per row, grid-stride over rows, a shuffle sum per row.

def coupling_inputs(rows, dim, dtype, strided):
    x = torch.randn(rows, dim + (3 if strided else 0)).to(dtype)[:, :dim]
    st = torch.randn(rows, 2 * dim).to(dtype)
    mask = (torch.arange(dim) % 3 == 0).to(dtype)
    return x, st, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tanh_scale", [False, True], ids=["identity", "tanh"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
@pytest.mark.parametrize("rows,dim,strided", [(37, 50, False), (1, 1, False), (0, 7, False),
                                              (9, 33, True), (20, 70, True)])
def test_affine_coupling(emu, rows, dim, strided, reverse, tanh_scale, dtype):
    x, st, mask = coupling_inputs(rows, dim, dtype, strided)
    s, t = st[:, :dim], st[:, dim:]  # strided halves, read in place
    args = (x, s, t, mask, tanh_scale, reverse)
    _, logdet = assert_like_cpu_kernel(emu, "affine_coupling", args, ("y", "logdet"))
    grad_y = torch.randn(rows, dim).to(dtype)
    grad_logdet = torch.randn(rows, dtype=logdet.dtype)
    assert_like_cpu_kernel(emu, "affine_coupling_backward", (grad_y, grad_logdet, *args),
                           ("grad_x", "grad_s", "grad_t"))
    packed = (x, st, mask, tanh_scale, reverse)
    assert_like_cpu_kernel(emu, "affine_coupling_packed", packed, ("y", "logdet"))
    assert_like_cpu_kernel(emu, "affine_coupling_packed_backward", (grad_y, grad_logdet, *packed),
                           ("grad_x", "grad_st"))


def test_affine_coupling_grid_stride(emu):
    x, st, mask = coupling_inputs(61, 45, torch.float32, strided=True)
    args = (x, st[:, :45], st[:, 45:], mask, True, False)
    bwd = (torch.randn(61, 45), torch.randn(61), *args)
    with emu.max_blocks(1):  # 8 warps for 61 rows
        assert_like_cpu_kernel(emu, "affine_coupling", args, ("y", "logdet"))
        assert_like_cpu_kernel(emu, "affine_coupling_backward", bwd, ("grad_x", "grad_s", "grad_t"))
    assert [launch["blocks_run"][0] for launch in emu.take_launches()] == [1, 1]


# Image coupling: a block per plane, a block sum (shared memory and shuffles) per plane.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channel_wise", [False, True], ids=["checkerboard", "channel"])
@pytest.mark.parametrize("reverse_mask", [False, True], ids=["mask", "reverse_mask"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "reverse"])
@pytest.mark.parametrize("shape", [(2, 4, 6, 6), (1, 2, 17, 19), (0, 2, 4, 4), (3, 2, 1, 1)])
def test_image_coupling(emu, shape, reverse, reverse_mask, channel_wise, dtype):
    b, c, h, w = shape
    cond = c // 2 if channel_wise else c
    # Seeded: grad_rescale sums a plane (323 terms at 17x19) whose terms can cancel. Over
    # 19,200 fresh draws of that backward's outputs, the emulated kernel's sums failed the
    # rule 7 times judged by the CPU kernel's error on the draw alone, and once judged by
    # its worst over the perturbed runs too (assert_like_cpu_kernel): rare, but this test
    # runs in CI three times over.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen).to(dtype)
    st = torch.randn(b, 2 * cond, h, w, generator=gen).to(dtype)
    rescale = torch.randn(cond, 1, 1, generator=gen).to(dtype)
    if shape[0] == 2:  # the binding copies strided inputs: channels-last x, a sliced st
        x = x.contiguous(memory_format=torch.channels_last)
        st = torch.cat([st, st], dim=3)[..., :w]
    args = (x, st, rescale, channel_wise, reverse_mask, reverse)
    _, logdet = assert_like_cpu_kernel(emu, "image_coupling", args, ("y", "logdet"))
    bwd = (torch.randn(b, c, h, w, generator=gen).to(dtype),
           torch.randn(b, generator=gen, dtype=logdet.dtype), *args)
    assert_like_cpu_kernel(emu, "image_coupling_backward", bwd, ("grad_x", "grad_st", "grad_rescale"))


# Dequantize-and-logit: a block per sample, a block sum for its log-determinant.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 14, 14), (1, 1, 2, 2), (0, 3, 2, 2), (2, 3, 5, 7), (4, 1000)])
def test_dequantize_logit(emu, shape, dtype):
    x = torch.rand(shape).to(dtype)
    noise = torch.rand(shape).to(dtype)
    constraint = torch.tensor([0.9], dtype=dtype)
    if len(shape) == 4 and shape[0] > 1:
        x = x.contiguous(memory_format=torch.channels_last)
    args = (x, noise, constraint)
    assert_like_cpu_kernel(emu, "dequantize_logit", args, ("y", "sldj"))


# Masked linear: tiled products through shared memory; matrix mask or degree staircase.

def degree_layer(batch, k, n, dtype, strided, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, k + 5, generator=gen).to(dtype)
    x = x[:, 2:2 + k] if strided else x[:, :k].contiguous()
    weight = (torch.randn(n, k, generator=gen) / max(k, 1) ** 0.5).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    in_degrees = torch.randperm(k, generator=gen) + 1
    # Some rows see no input, some see all of them.
    out_degrees = torch.randint(0, k + 2, (n,), generator=gen)
    return x, weight, bias, in_degrees, out_degrees


MASKED_SHAPES = [(1, 1, 1), (7, 13, 17), (70, 150, 130), (0, 5, 3), (65, 64, 64), (3, 200, 9),
                 (130, 9, 200)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["matrix", "degree"])
@pytest.mark.parametrize("batch,k,n", MASKED_SHAPES)
def test_masked_linear(emu, batch, k, n, form, dtype):
    x, weight, bias, in_degrees, out_degrees = degree_layer(batch, k, n, dtype, batch > 2, batch + k)
    if form == "matrix":
        mask = (in_degrees[None, :] <= out_degrees[:, None]).to(dtype)
        fwd = ("masked_linear", (x, weight, mask))
    else:
        fwd = ("degree_masked_linear", (x, weight, in_degrees, out_degrees))
    name, args = fwd
    for b in (bias, None):
        assert_like_cpu_kernel(emu, name, (*args, b), ("y",))
    grad_y = torch.randn(batch, n + 4).to(dtype)[:, 1:1 + n]  # strided rows
    for input_grad in (True, False):
        got = assert_like_cpu_kernel(emu, name + "_backward", (grad_y, *args, input_grad),
                                     ("grad_x", "grad_weight", "grad_bias"))
        mask = in_degrees[None, :] <= out_degrees[:, None]
        assert bool((got[1][~mask] == 0).all()), "grad_weight must be zero where the mask is"


# One-pass MADE / MAF sampling: one persistent launch; accumulators in shared memory when
# they fit, else in global scratch. Same push order as the CPU kernel: identical results.

def sample_args(made, noise, rule):
    layers = masked_stack(made, "test")
    plan = made_plan.cached_plan(made, layers, RULES[rule][0], "test").plan
    return (noise, [l.weight for l in layers], [l.bias for l in layers], [l.mask for l in layers],
            *plan.to(noise.device), rule, [], "relu", [True] * (len(layers) - 1),
            [-1] * len(layers), [None] * len(layers))


def sampling_model(rule, dims, dtype, hidden=37):
    np.random.seed(dims)
    torch.manual_seed(dims)
    if rule == "bernoulli":
        return reference.made.MADE(dims, [hidden + 3, hidden - 4], dims).to(dtype)
    return reference.maf.MADE(dims, hidden, 2).to(dtype)


def sampling_noise(rule, batch, dims, dtype, strided=False):
    noise = torch.rand(batch, dims + 3) if rule == "bernoulli" else torch.randn(batch, dims + 3)
    noise = noise.to(dtype)[:, 1:1 + dims]
    return noise if strided else noise.contiguous()


def assert_sampling_identical(got, expected, dtype):
    names = ("values", "log_terms", "outputs")
    if dtype in (torch.float32, torch.float64):
        for g, e, name in zip(got, expected, names):
            assert_identical(g, e, f"made_sample {name}")
    else:  # the reference's roundings through the storage type; log terms in float32
        assert_identical(got[0], expected[0], "made_sample values")
        for g, e, name in zip(got[1:], expected[1:], names[1:]):  # same order: float32 roundings
            assert_matches_float64(g, e.double(), f"made_sample {name}", dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", list(MADE_RULES))
@pytest.mark.parametrize("batch,dims", [(19, 10), (1, 6), (0, 5), (8, 2)])
def test_made_sample(emu, batch, dims, rule, dtype):
    made = sampling_model(rule, dims, dtype)
    args = sample_args(made, sampling_noise(rule, batch, dims, dtype, strided=batch > 8), rule)
    expected = CPU.made_sample(*args)
    got = emu.ops.made_sample(*args)
    assert_sampling_identical(got, expected, dtype)
    if batch:
        launch, = emu.take_launches()
        assert launch["dynamic_shared"] > 0, "the accumulators fit in shared memory"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", list(INTERLEAVED_RULES))
@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_made_sample_peer_rules_and_wirings(emu, rule, wiring, dtype):
    """zuko's and nflows' rules, another activation, residual skips and context terms on
    two layers, against the CPU kernel (the same formulas, compiled apart: to rounding)."""
    rule_params, per_dim, noise_scale = INTERLEAVED_RULES[rule]
    activated, skips, context_layers = WIRINGS[wiring]
    dims, batch = 7, 11
    weights, biases, masks = interleaved_stack(dims, [40, 24, 40], per_dim, dtype, seed=3,
                                               same_degrees=((0, 2),))
    plan = made_plan.build_plan(masks, per_dim, "test", interleaved=True, skips=skips)
    generator = torch.Generator().manual_seed(4)
    noise = noise_scale * torch.randn(batch, dims, generator=generator, dtype=dtype)
    contexts = [torch.randn(batch, w.shape[0], generator=generator, dtype=dtype)
                if l in context_layers else None for l, w in enumerate(weights)]
    args = (noise, weights, biases, masks, *plan.to("cpu"), rule, rule_params, "elu", activated,
            skips, contexts)
    expected = CPU.made_sample(*args)
    got = emu.ops.made_sample(*args)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for g, e, name in zip(got, expected, ("values", "log_terms", "outputs")):
        torch.testing.assert_close(g, e, rtol=tolerance, atol=tolerance, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", ["bernoulli", "gaussian"])
def test_made_sample_global_scratch_and_small_grid(emu, rule, dtype):
    made = sampling_model(rule, 12, dtype, hidden=300)
    args = sample_args(made, sampling_noise(rule, 29, 12, dtype), rule)
    expected = CPU.made_sample(*args)
    # No room for the accumulators (8 samples × 600 units) beside the kernel's 4 KiB of
    # __shared__ variables: global scratch. 2 SMs of one CTA each: 2 CTAs for the 4 tiles of 8
    # samples, each looping over tiles.
    with emu.device_attribute(cuda_cpu.ATTR_MAX_SHARED_PER_BLOCK_OPTIN, 12 * 1024), \
            emu.device_attribute(cuda_cpu.ATTR_MULTIPROCESSOR_COUNT, 2), \
            emu.device_attribute(cuda_cpu.ATTR_MAX_BLOCKS_PER_MULTIPROCESSOR, 1):
        got = emu.ops.made_sample(*args)
    launch, = emu.take_launches()
    assert launch["dynamic_shared"] == 0 and launch["grid"][0] == 2
    assert_sampling_identical(got, expected, dtype)
    # Shared memory again, one CTA for all the tiles.
    with emu.device_attribute(cuda_cpu.ATTR_MULTIPROCESSOR_COUNT, 1), \
            emu.device_attribute(cuda_cpu.ATTR_MAX_BLOCKS_PER_MULTIPROCESSOR, 1):
        got = emu.ops.made_sample(*args)
    launch, = emu.take_launches()
    assert launch["dynamic_shared"] > 0 and launch["grid"][0] == 1
    assert_sampling_identical(got, expected, dtype)


def test_made_sample_wide_layers_opt_in_past_48k(emu):
    """Accumulators of 8 samples × 1612 units × 4 bytes = 51.6 KB: above 48 KiB, which the
    launcher must opt into with cudaFuncSetAttribute (the emulator checks)."""
    np.random.seed(0)
    torch.manual_seed(0)
    made = reference.made.MADE(20, [800, 792], 20)
    args = sample_args(made, torch.rand(9, 20), "bernoulli")
    got = emu.ops.made_sample(*args)
    launch, = emu.take_launches()
    assert launch["dynamic_shared"] > 48 * 1024
    assert_sampling_identical(got, CPU.made_sample(*args), torch.float32)


@pytest.mark.skipif(cuda_cpu.sanitize_setting() == "thread",
                    reason="a bad plan's clamped orders send several threads to one output: a "
                           "race by design (its values are undefined), not a kernel bug")
@pytest.mark.parametrize("rule", list(MADE_RULES))
def test_made_sample_bad_plan_stays_in_bounds(emu, rule):
    """The binding does not read the plan's values (made_sample.cuh): it clamps the unit
    orders into range, and the kernel every offset and range it reads. A bad plan gives wrong
    samples, never an access out of bounds: indexes of ±2³⁰ would crash the process, and
    under tests/cuda_cpu/sanitize.py address,undefined ASan checks every access."""
    made = sampling_model(rule, 10, torch.float32)
    args = sample_args(made, sampling_noise(rule, 19, 10, torch.float32), rule)
    for what, bad in out_of_range_plans(args):
        values, log_terms, outputs = emu.ops.made_sample(*bad)
        assert values.shape == (19, 10) and log_terms.shape == (19,), what
        assert outputs.shape == (19, 10 * RULES[rule][0]), what


# The emulator's own checks: launches beyond the hardware's limits fail with the limit named.

def _pointer(tensor):
    return ctypes.c_void_p(tensor.data_ptr())


def test_launch_limits_named(emu):
    probe = emu.probes
    assert probe.probe_launch_bounds(64) == 0
    err = probe.probe_launch_bounds(128)
    assert err != 0 and "__launch_bounds__(64)" in emu.error_string(err)
    cases = [((1, 1, 1, 1025, 1, 1), "threads per block"), ((1, 1, 1, 32, 32, 2), "threads per block"),
             ((1, 65536, 1, 32, 1, 1), "grid.y"), ((1, 1, 70000, 32, 1, 1), "grid.z"),
             ((0, 1, 1, 32, 1, 1), "empty dimension")]
    for shape, named in cases:
        err = probe.probe_launch_shape(*shape)
        assert err != 0 and named in emu.error_string(err), (shape, emu.error_string(err))
    out = torch.zeros(64)
    assert probe.probe_static_shared(32, _pointer(out)) == 0 and bool((out[:32] == 3).all())
    err = probe.probe_static_shared(56, _pointer(out))
    assert err != 0 and "static shared memory" in emu.error_string(err)


def test_dynamic_shared_memory_opt_in(emu):
    out = torch.zeros(64)
    assert emu.probes.probe_dynamic_shared(48 * 1024, 0, _pointer(out)) == 0
    assert out.tolist() == [float(63 - i) for i in range(64)]
    err = emu.probes.probe_dynamic_shared(64 * 1024, 0, _pointer(out))
    assert err != 0 and "cudaFuncSetAttribute" in emu.error_string(err)
    assert emu.probes.probe_dynamic_shared(64 * 1024, 1, _pointer(out)) == 0
    err = emu.probes.probe_dynamic_shared(228 * 1024, 1, _pointer(out))
    assert err != 0


@pytest.mark.parametrize("threads", [32, 96, 256])
def test_warp_shuffles(emu, threads):
    out = torch.zeros(threads)
    assert emu.probes.probe_warp_sum(_pointer(out), threads, 16) == 0
    assert bool((out == 496).all())  # 0 + 1 + ... + 31 in every lane
    # Offset 32 leaves the warp: each lane adds its own value (2·lane), then 16 .. 1 sum that.
    assert emu.probes.probe_warp_sum(_pointer(out), threads, 32) == 0
    assert bool((out == 992).all())


def test_shuffle_from_exited_lane_and_unwritten_shared(emu):
    out = torch.zeros(32)
    err = emu.probes.probe_shuffle_exited_lane(_pointer(out))
    assert err != 0 and "did not take part" in emu.error_string(err)
    assert emu.probes.probe_unwritten_shared(_pointer(out)) == 0
    assert out[1].isnan() and bool((out[torch.arange(32) != 1] == 1).all())


def test_conversions_round_as_cuda(emu):
    """float -> half / bfloat16 to nearest even (CUDA's __float2half_rn, __float2bfloat16_rn),
    as torch's CPU conversions; NaN becomes CUDA's canonical 0x7fff."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31, (1 << 20,), generator=gen, dtype=torch.int64).to(torch.int32)
    edges = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001,
                          2.0**-14, 2.0**-14 * (1 - 2**-11), 3.0e38, float("inf"), -float("inf"),
                          1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8])
    values = torch.cat([bits.view(torch.float32), edges, (torch.rand(1 << 16, generator=gen) - 0.5) * 2e-4])
    values = values[~values.isnan()]
    for name, dtype in (("half", torch.float16), ("bfloat16", torch.bfloat16)):
        got = torch.empty(values.numel(), dtype=torch.int16)
        getattr(emu.probes, f"probe_float_to_{name}")(_pointer(values), _pointer(got), values.numel())
        assert torch.equal(got, values.to(dtype).view(torch.int16)), name
        every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16)
        back = torch.empty(1 << 16)
        getattr(emu.probes, f"probe_{name}_to_float" if name == "bfloat16" else "probe_half_to_float")(
            _pointer(every), _pointer(back), 1 << 16)
        expected = every.view(dtype).float()
        assert torch.equal(back[~expected.isnan()], expected[~expected.isnan()]) and bool(back[expected.isnan()].isnan().all())
        nan = torch.tensor([float("nan")])
        one = torch.empty(1, dtype=torch.int16)
        getattr(emu.probes, f"probe_float_to_{name}")(_pointer(nan), _pointer(one), 1)
        assert one.item() == 0x7fff


_CUDA_CONVERSIONS = r"""
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
// stdin: n floats; stdout: their half bits, their bfloat16 bits, then every half and every
// bfloat16 bit pattern as a float.
int main() {
  std::vector<float> in;
  float f;
  while (std::fread(&f, sizeof f, 1, stdin) == 1) in.push_back(f);
  for (float v : in) { __half h = __float2half_rn(v); std::fwrite(&h, 2, 1, stdout); }
  for (float v : in) { __nv_bfloat16 b = __float2bfloat16_rn(v); std::fwrite(&b, 2, 1, stdout); }
  for (uint32_t i = 0; i < 65536; ++i) {
    uint16_t bits = static_cast<uint16_t>(i);
    __half h; std::memcpy(&h, &bits, 2);
    float v = __half2float(h); std::fwrite(&v, 4, 1, stdout);
  }
  for (uint32_t i = 0; i < 65536; ++i) {
    uint16_t bits = static_cast<uint16_t>(i);
    __nv_bfloat16 b; std::memcpy(&b, &bits, 2);
    float v = __bfloat162float(b); std::fwrite(&v, 4, 1, stdout);
  }
}
"""


def _cuda_include():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    include = os.path.join(home, "include")
    return include if os.path.exists(os.path.join(include, "cuda_fp16.h")) else None


@pytest.mark.skipif(_cuda_include() is None, reason="needs the CUDA toolkit's headers")
def test_conversions_match_cuda_headers(emu, tmp_path):
    """The emulation's conversions against the CUDA toolkit's own (their host code), bit for
    bit, NaN included."""
    source = tmp_path / "conversions.cpp"
    source.write_text(_CUDA_CONVERSIONS)
    program = tmp_path / "conversions"
    subprocess.run(["c++", "-std=c++17", "-O1", "-I", _cuda_include(), str(source), "-o", str(program)],
                   check=True)
    gen = torch.Generator().manual_seed(1)
    values = torch.randint(-2**31, 2**31, (1 << 18,), generator=gen, dtype=torch.int64).to(torch.int32)
    values = torch.cat([values.view(torch.float32), torch.tensor([65520.0, 2.0**-25, float("nan"), -0.0])])
    out = subprocess.run([str(program)], input=values.numpy().tobytes(), capture_output=True,
                         check=True).stdout
    n = values.numel()
    cuda = torch.frombuffer(bytearray(out), dtype=torch.uint8)
    cuda_half = cuda[:2 * n].view(torch.int16)
    cuda_bf16 = cuda[2 * n:4 * n].view(torch.int16)
    cuda_floats = cuda[4 * n:].view(torch.int32)
    ours = torch.empty(n, dtype=torch.int16)
    emu.probes.probe_float_to_half(_pointer(values), _pointer(ours), n)
    assert torch.equal(ours, cuda_half)
    emu.probes.probe_float_to_bfloat16(_pointer(values), _pointer(ours), n)
    assert torch.equal(ours, cuda_bf16)
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16)
    back = torch.empty(2 << 16)
    emu.probes.probe_half_to_float(_pointer(every), _pointer(back), 1 << 16)
    emu.probes.probe_bfloat16_to_float(_pointer(every), ctypes.c_void_p(back.data_ptr() + 4 * (1 << 16)),
                                       1 << 16)
    assert torch.equal(back.view(torch.int32), cuda_floats)
