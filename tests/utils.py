"""The tests' one way of judging a result: fastflow.accuracy's rule, against the reference
run in float64 on the same inputs (see fastflow/accuracy.py)."""

import pytest
import torch

from fastflow.accuracy import TOLERANCE, mismatch, relative_error  # noqa: F401 (re-exported)


def assert_matches_float64(got, truth, what, *, reference=None, dtype=None, scale=None):
    """Asserts that `got` is within fastflow.accuracy's allowance of the float64 `truth`:
    max(the dtype's tolerance, 2 × the error of `reference`, the reference's own result in
    got's dtype, when given). Shapes must match; `scale`: the scale of the whole `truth`
    belongs to (its model's largest gradient), which replaces truth's own largest magnitude
    when that is zero but for float64's rounding."""
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got).__name__}, not a tensor"
    assert got.shape == truth.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(truth.shape)}"
    reason = mismatch(got, truth, reference=reference, dtype=dtype, scale=scale)
    assert reason is None, f"{what}: {reason}"


def reference_unless_torch(backend, dtype, reference):
    """What to pass as `reference=` for a result of `backend` on inputs of `dtype`: the
    reference's own result, except where that would judge the reference against itself. The
    'torch' backend runs that reference: in float32 and float64 it is judged by the dtype's
    tolerance alone (None); in float16 and bfloat16 its own rounding (a log-det's
    cancellation) can exceed the tolerance, and the rule allows the reference its own error."""
    if backend == "torch" and dtype in (torch.float32, torch.float64):
        return None
    return reference


def assert_raises_on_every_path(backend, op, error, message, public_call, op_args):
    """Bad arguments are refused with the same error and words by the public function on
    `backend` and, for a kernel backend, by its custom op called directly (which checks its
    own arguments: C++ for cpu and cuda, Python for triton). A non-tensor among op_args (None
    too: a C++ op would see an undefined tensor) is left to the dispatcher and the public
    function."""
    import fastflow

    with fastflow.backend(backend), pytest.raises(error, match=message):
        public_call()
    if backend == "torch" or not all(isinstance(a, (torch.Tensor, bool)) for a in op_args):
        return
    kernel = getattr(torch.ops.fastflow, op + ("_triton" if backend == "triton" else ""))
    with pytest.raises(error, match=message):
        kernel(*op_args)
