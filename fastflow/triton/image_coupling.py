"""Image affine coupling (the multi-scale RealNVP's) in Triton: one program per (b, c)
plane of x, looping over the plane in BLOCK chunks; per-plane partial sums of the logdet
and of the rescale gradient, reduced by the caller. Layout: csrc/image_coupling_index.h;
the C++ kernels' math, which this is checked against: csrc/image_coupling_math.h."""

import triton
import triton.language as tl

from .affine_coupling import _tanh

BLOCK = 1024


@triton.jit
def _plane(plane, channels, cond_channels, CHANNEL_WISE: tl.constexpr, REVERSE_MASK: tl.constexpr):
    """(b, cc): the batch index and the conditioner channel of this plane (-1: kept whole)."""
    b = plane // channels
    c = plane % channels
    if CHANNEL_WISE:
        cc = c - (cond_channels if REVERSE_MASK else 0)
        cc = tl.where((cc >= 0) & (cc < cond_channels), cc, -1)
    else:
        cc = c
    return b, cc


@triton.jit
def _changed(idx, width, CHANNEL_WISE: tl.constexpr, REVERSE_MASK: tl.constexpr):
    """1.0 where the checkerboard changes the pixel (always, for channel-wise coupling)."""
    if CHANNEL_WISE:
        return tl.full(idx.shape, 1.0, tl.float32)
    parity = (idx // width + idx % width) % 2
    kept_parity = 0 if REVERSE_MASK else 1
    return tl.where(parity == kept_parity, 0.0, 1.0)


@triton.jit
def _image_coupling_forward_kernel(x_ptr, st_ptr, rescale_ptr, y_ptr, partial_ptr, channels,
                                   cond_channels, width, hw, CHANNEL_WISE: tl.constexpr,
                                   REVERSE_MASK: tl.constexpr, REVERSE: tl.constexpr,
                                   BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    b, cc = _plane(plane, channels, cond_channels, CHANNEL_WISE, REVERSE_MASK)
    x_plane = x_ptr + plane * hw
    y_plane = y_ptr + plane * hw
    acc_dtype = partial_ptr.dtype.element_ty
    if cc < 0:  # a channel kept whole: copy it
        for start in range(0, hw, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            tl.store(y_plane + idx, tl.load(x_plane + idx, mask=idx < hw), mask=idx < hw)
    else:
        s_plane = st_ptr + (b * 2 * cond_channels + cc) * hw
        t_plane = s_plane + cond_channels * hw
        weight = tl.load(rescale_ptr + cc).to(acc_dtype)
        total = tl.zeros([BLOCK], dtype=acc_dtype)
        for start in range(0, hw, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            valid = idx < hw
            change = _changed(idx, width, CHANNEL_WISE, REVERSE_MASK).to(acc_dtype)
            s = tl.load(s_plane + idx, mask=valid, other=0.0).to(acc_dtype)
            t = tl.load(t_plane + idx, mask=valid, other=0.0).to(acc_dtype)
            x = tl.load(x_plane + idx, mask=valid, other=0.0).to(acc_dtype)
            s_masked = weight * _tanh(s) * change
            t_masked = t * change
            if REVERSE:
                y = x * tl.exp(-s_masked) - t_masked
            else:
                y = (x + t_masked) * tl.exp(s_masked)
            tl.store(y_plane + idx, y.to(y_ptr.dtype.element_ty), mask=valid)
            total += tl.where(valid, s_masked, 0.0)
        logdet = tl.sum(total, axis=0)
        if REVERSE:
            logdet = -logdet
        tl.store(partial_ptr + b * cond_channels + cc, logdet)


@triton.jit
def _image_coupling_backward_kernel(grad_y_ptr, grad_logdet_ptr, x_ptr, st_ptr, rescale_ptr,
                                    grad_x_ptr, grad_st_ptr, partial_ptr, channels,
                                    cond_channels, width, hw, CHANNEL_WISE: tl.constexpr,
                                    REVERSE_MASK: tl.constexpr, REVERSE: tl.constexpr,
                                    BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    b, cc = _plane(plane, channels, cond_channels, CHANNEL_WISE, REVERSE_MASK)
    grad_y_plane = grad_y_ptr + plane * hw
    grad_x_plane = grad_x_ptr + plane * hw
    acc_dtype = partial_ptr.dtype.element_ty
    out_dtype = grad_x_ptr.dtype.element_ty
    if cc < 0:  # a channel kept whole: its gradient passes through
        for start in range(0, hw, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            tl.store(grad_x_plane + idx, tl.load(grad_y_plane + idx, mask=idx < hw), mask=idx < hw)
    else:
        s_offset = (b * 2 * cond_channels + cc) * hw
        t_offset = s_offset + cond_channels * hw
        weight = tl.load(rescale_ptr + cc).to(acc_dtype)
        grad_logdet = tl.load(grad_logdet_ptr + b).to(acc_dtype)
        grad_weight = tl.zeros([BLOCK], dtype=acc_dtype)
        for start in range(0, hw, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            valid = idx < hw
            change = _changed(idx, width, CHANNEL_WISE, REVERSE_MASK).to(acc_dtype)
            act = _tanh(tl.load(st_ptr + s_offset + idx, mask=valid, other=0.0).to(acc_dtype))
            x = tl.load(x_ptr + plane * hw + idx, mask=valid, other=0.0).to(acc_dtype)
            gy = tl.load(grad_y_plane + idx, mask=valid, other=0.0).to(acc_dtype)
            s_masked = weight * act * change
            if REVERSE:
                inv_scale = tl.exp(-s_masked)
                grad_x = gy * inv_scale
                grad_t = -gy * change
                grad_s_masked = -gy * x * inv_scale - grad_logdet
            else:
                scale = tl.exp(s_masked)
                t_masked = tl.load(st_ptr + t_offset + idx, mask=valid, other=0.0).to(acc_dtype) * change
                grad_x = gy * scale
                grad_t = gy * scale * change
                grad_s_masked = gy * (x + t_masked) * scale + grad_logdet
            # 1 − act², factored: no cancellation as |act| -> 1
            grad_s = grad_s_masked * change * weight * ((1.0 - act) * (1.0 + act))
            tl.store(grad_x_plane + idx, grad_x.to(out_dtype), mask=valid)
            tl.store(grad_st_ptr + s_offset + idx, grad_s.to(out_dtype), mask=valid)
            tl.store(grad_st_ptr + t_offset + idx, grad_t.to(out_dtype), mask=valid)
            grad_weight += tl.where(valid, grad_s_masked * change * act, 0.0)
        tl.store(partial_ptr + b * cond_channels + cc, tl.sum(grad_weight, axis=0))


def _block(hw):
    return min(max(triton.next_power_of_2(hw), 16), BLOCK)


def image_coupling_forward(x, st, rescale, y, partial, channel_wise, reverse_mask, reverse):
    """Writes y and the per-(b, cc) logdet partials (contiguous tensors from the caller)."""
    b, c, h, w = x.shape
    if x.numel() == 0:
        return
    _image_coupling_forward_kernel[(b * c,)](
        x, st, rescale, y, partial, c, partial.shape[1], w, h * w, CHANNEL_WISE=channel_wise,
        REVERSE_MASK=reverse_mask, REVERSE=reverse, BLOCK=_block(h * w))


def image_coupling_backward(grad_y, grad_logdet, x, st, rescale, grad_x, grad_st, partial,
                            channel_wise, reverse_mask, reverse):
    """Writes grad_x, grad_st and the per-(b, cc) rescale-gradient partials."""
    b, c, h, w = x.shape
    if x.numel() == 0:
        return
    _image_coupling_backward_kernel[(b * c,)](
        grad_y, grad_logdet, x, st, rescale, grad_x, grad_st, partial, c, partial.shape[1], w,
        h * w, CHANNEL_WISE=channel_wise, REVERSE_MASK=reverse_mask, REVERSE=reverse,
        BLOCK=_block(h * w))
