"""The ops as PyTorch sees them (custom ops with fake implementations and autograd), and
the public functions that run them on the chosen backend.

Each op's public function has its submodule's name, so `fastflow.ops.masked_linear` (and
likewise affine_coupling, dequantize_logit, image_coupling, made_sample, squeeze_2x2) is the
function, not the module. Helpers meant for users are exported here by name
(`fastflow.ops.degrees_from_mask`); the modules themselves stay importable as
`from fastflow.ops.masked_linear import ...` or
`importlib.import_module("fastflow.ops.masked_linear")`.
"""

from . import affine_coupling as _affine_coupling
from . import dequantize_logit as _dequantize_logit
from . import image_coupling as _image_coupling
from . import made_plan as _made_plan
from . import made_sample as _made_sample
from . import masked_linear as _masked_linear
from . import squeeze_2x2 as _squeeze_2x2

affine_coupling = _affine_coupling.affine_coupling
affine_coupling_packed = _affine_coupling.affine_coupling_packed
dequantize_logit = _dequantize_logit.dequantize_logit
image_coupling = _image_coupling.image_coupling
masked_linear = _masked_linear.masked_linear
degree_masked_linear = _masked_linear.degree_masked_linear
degrees_from_mask = _masked_linear.degrees_from_mask
squeeze_2x2 = _squeeze_2x2.squeeze_2x2
made_sample = _made_sample.made_sample
gaussian_made_sample = _made_sample.gaussian_made_sample
iaf_inverse = _made_sample.iaf_inverse
clear_sample_plans = _made_plan.clear_sample_plans

# Each op's 'auto' choices per device type (see fastflow.backend.resolve).
AUTO_ORDERS = {
    "squeeze_2x2": _squeeze_2x2.AUTO_ORDER,
    "affine_coupling": _affine_coupling.AUTO_ORDER,
    "image_coupling": _image_coupling.AUTO_ORDER,
    "dequantize_logit": _dequantize_logit.AUTO_ORDER,
    "masked_linear": _masked_linear.AUTO_ORDER,
    "made_sample": _made_sample.AUTO_ORDER,
}
# Where 'auto' also looks at the call (fastflow.info() shows it beside the pick).
AUTO_CONDITIONS = {
    ("masked_linear", "cpu"): "where measured faster than torch, per shape class: fastflow.autotune",
}

__all__ = ["affine_coupling", "affine_coupling_packed", "degree_masked_linear", "degrees_from_mask",
           "clear_sample_plans", "dequantize_logit",
           "gaussian_made_sample", "iaf_inverse", "image_coupling", "made_sample", "masked_linear",
           "squeeze_2x2", "AUTO_CONDITIONS", "AUTO_ORDERS"]
