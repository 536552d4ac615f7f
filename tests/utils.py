"""The tests' one way of judging a result: fastflow.accuracy's rule, against the reference
run in float64 on the same inputs (see fastflow/accuracy.py)."""

import torch

from fastflow.accuracy import TOLERANCE, mismatch, relative_error  # noqa: F401 (re-exported)


def assert_matches_float64(got, truth, what, *, reference=None, dtype=None, scale=None):
    """Asserts that `got` is within fastflow.accuracy's allowance of the float64 `truth`:
    max(the dtype's tolerance, 2 × the error of `reference`, the reference's own result in
    got's dtype, when given). Shapes must match; `scale` replaces truth's largest magnitude
    (for a truth that is exactly zero)."""
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got).__name__}, not a tensor"
    assert got.shape == truth.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(truth.shape)}"
    reason = mismatch(got, truth, reference=reference, dtype=dtype, scale=scale)
    assert reason is None, f"{what}: {reason}"
