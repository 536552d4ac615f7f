"""Vector affine coupling in Triton: one program per row, looping over the row in
BLOCK_D chunks, accumulating the row's logdet in float32 (float64 for float64 inputs).
The C++ kernels' math, which this is checked against: csrc/affine_coupling_math.h."""

import triton
import triton.language as tl


@triton.jit
def _tanh(v):
    # Beyond small |v|: 1 - 2 / (exp(2|v|) + 1), on |v| so that exp never overflows. That
    # difference loses relative accuracy as |v| -> 0 (a float32 logdet of small s was off by
    # 1e-5), so near 0 an odd polynomial: for float32 the one csrc/cpu/vector_math.h uses
    # below 0.625 (Cephes' tanhf), for float64 the Taylor series to v^11 below 0.1
    # (truncation < 4e-15 relative).
    a = tl.abs(v)
    r = 1.0 - 2.0 / (tl.exp(2.0 * a) + 1.0)
    large = tl.where(v < 0, -r, r)
    z = v * v
    if v.dtype == tl.float64:
        small = v * (1.0 + z * (-1.0 / 3 + z * (2.0 / 15 + z * (-17.0 / 315 + z * (
            62.0 / 2835 + z * (-1382.0 / 155925))))))
        result = tl.where(a < 0.1, small, large)
    else:
        small = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
                  + 1.33314422036e-1) * z - 3.33332819422e-1) * z * v + v
        result = tl.where(a < 0.625, small, large)
    return result


@triton.jit
def _affine_coupling_forward_kernel(x_ptr, s_ptr, t_ptr, mask_ptr, y_ptr, logdet_ptr, dim,
                                    x_row, s_row, t_row, TANH: tl.constexpr,
                                    REVERSE: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    total = tl.zeros([BLOCK_D], dtype=logdet_ptr.dtype.element_ty)
    for start in range(0, dim, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        valid = cols < dim
        keep = tl.load(mask_ptr + cols, mask=valid, other=1.0).to(total.dtype)
        change = 1.0 - keep
        s = tl.load(s_ptr + row * s_row + cols, mask=valid, other=0.0).to(total.dtype)
        t = tl.load(t_ptr + row * t_row + cols, mask=valid, other=0.0).to(total.dtype)
        x = tl.load(x_ptr + row * x_row + cols, mask=valid, other=0.0).to(total.dtype)
        if TANH:
            s = _tanh(s)
        s_masked = s * change
        t_masked = t * change
        if REVERSE:
            y = x * keep + change * ((x - t_masked) * tl.exp(-s_masked))
        else:
            y = x * keep + change * (x * tl.exp(s_masked) + t_masked)
        tl.store(y_ptr + row * dim + cols, y.to(y_ptr.dtype.element_ty), mask=valid)
        total += s_masked
    logdet = tl.sum(total, axis=0)
    if REVERSE:
        logdet = -logdet
    tl.store(logdet_ptr + row, logdet)


@triton.jit
def _affine_coupling_backward_kernel(grad_y_ptr, grad_logdet_ptr, x_ptr, s_ptr, t_ptr, mask_ptr,
                                     grad_x_ptr, grad_s_ptr, grad_t_ptr, dim, grad_y_row,
                                     grad_logdet_stride, x_row, s_row, t_row, grad_s_row,
                                     grad_t_row, TANH: tl.constexpr, REVERSE: tl.constexpr,
                                     BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    grad_logdet = tl.load(grad_logdet_ptr + row * grad_logdet_stride)
    for start in range(0, dim, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        valid = cols < dim
        keep = tl.load(mask_ptr + cols, mask=valid, other=1.0).to(grad_logdet.dtype)
        change = 1.0 - keep
        s = tl.load(s_ptr + row * s_row + cols, mask=valid, other=0.0).to(grad_logdet.dtype)
        t = tl.load(t_ptr + row * t_row + cols, mask=valid, other=0.0).to(grad_logdet.dtype)
        x = tl.load(x_ptr + row * x_row + cols, mask=valid, other=0.0).to(grad_logdet.dtype)
        gy = tl.load(grad_y_ptr + row * grad_y_row + cols, mask=valid, other=0.0).to(grad_logdet.dtype)
        if TANH:
            act = _tanh(s)
            act_grad = (1.0 - act) * (1.0 + act)  # no cancellation as |act| -> 1
        else:
            act = s
            act_grad = tl.full(s.shape, 1.0, s.dtype)
        s_masked = act * change
        if REVERSE:
            inv_scale = tl.exp(-s_masked)
            grad_x = gy * (keep + change * inv_scale)
            grad_s_masked = -gy * change * (x - t * change) * inv_scale - grad_logdet
            grad_t = -gy * change * inv_scale * change
        else:
            scale = tl.exp(s_masked)
            grad_x = gy * (keep + change * scale)
            grad_s_masked = gy * change * x * scale + grad_logdet
            grad_t = gy * change * change
        dtype = grad_x_ptr.dtype.element_ty
        tl.store(grad_x_ptr + row * dim + cols, grad_x.to(dtype), mask=valid)
        tl.store(grad_s_ptr + row * grad_s_row + cols, (grad_s_masked * change * act_grad).to(dtype),
                 mask=valid)
        tl.store(grad_t_ptr + row * grad_t_row + cols, grad_t.to(dtype), mask=valid)


def _block_d(dim):
    return min(max(triton.next_power_of_2(dim), 16), 1024)


def affine_coupling_forward(x, s, t, mask, y, logdet, tanh_scale, reverse):
    """Writes y and logdet (allocated by the caller; rows of x, s, t contiguous)."""
    if x.shape[0] == 0:
        return
    _affine_coupling_forward_kernel[(x.shape[0],)](
        x, s, t, mask, y, logdet, x.shape[1], x.stride(0), s.stride(0), t.stride(0),
        TANH=tanh_scale, REVERSE=reverse, BLOCK_D=_block_d(x.shape[1]))


def affine_coupling_backward(grad_y, grad_logdet, x, s, t, mask, grad_x, grad_s, grad_t,
                             tanh_scale, reverse):
    """Writes grad_x (contiguous), grad_s and grad_t (rows contiguous; they may be the two
    halves of one [B, 2D] tensor), allocated by the caller."""
    if x.shape[0] == 0:
        return
    _affine_coupling_backward_kernel[(x.shape[0],)](
        grad_y, grad_logdet, x, s, t, mask, grad_x, grad_s, grad_t, x.shape[1], grad_y.stride(0),
        grad_logdet.stride(0), x.stride(0), s.stride(0), t.stride(0), grad_s.stride(0),
        grad_t.stride(0), TANH=tanh_scale, REVERSE=reverse, BLOCK_D=_block_d(x.shape[1]))
