"""Dequantize-and-logit (the multi-scale RealNVP's _pre_process) in Triton: one program per
sample. Math: csrc/dequantize_logit.h."""

import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _dequantize_logit_kernel(x_ptr, noise_ptr, constraint_ptr, y_ptr, sldj_ptr, n,
                             BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc_dtype = sldj_ptr.dtype.element_ty
    c = tl.load(constraint_ptr).to(acc_dtype)
    constant = -tl.log(c)  # softplus(log(1 - c) - log(c))
    total = tl.zeros([BLOCK], dtype=acc_dtype)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        valid = idx < n
        x = tl.load(x_ptr + row * n + idx, mask=valid, other=0.5).to(acc_dtype)
        noise = tl.load(noise_ptr + row * n + idx, mask=valid, other=0.5).to(acc_dtype)
        u = (x * 255.0 + noise) / 256.0
        p = ((2.0 * u - 1.0) * c + 1.0) / 2.0
        log_p = tl.log(p)
        log_q = tl.log(1.0 - p)
        tl.store(y_ptr + row * n + idx, (log_p - log_q).to(y_ptr.dtype.element_ty), mask=valid)
        total += tl.where(valid, -log_p - log_q - constant, 0.0)
    tl.store(sldj_ptr + row, tl.sum(total, axis=0))


def dequantize_logit(x, noise, constraint, y, sldj):
    """Writes y and sldj (contiguous tensors from the caller; x, noise as [B, n])."""
    batch = x.shape[0]
    if batch == 0:
        return
    n = x.numel() // batch
    _dequantize_logit_kernel[(batch,)](x, noise, constraint, y, sldj, n,
                                       BLOCK=min(max(triton.next_power_of_2(n), 16), BLOCK))
