"""The ops as PyTorch sees them (custom ops with fake implementations and autograd), and
the public functions that run them on the chosen backend.

Each op's public function has its submodule's name, so `fastflow.ops.masked_linear` (and
likewise affine_coupling, dequantize_logit, image_coupling, made_sample, squeeze_2x2) is the
function, not the module (made_mlp too). Helpers meant for users are exported here by name
(`fastflow.ops.degrees_from_mask`); the modules themselves stay importable as
`from fastflow.ops.masked_linear import ...` or
`importlib.import_module("fastflow.ops.masked_linear")`. Each op's entry (reference, kernels,
'auto' policy) is in fastflow.ops.registry.REGISTRY.
"""

# Imported in the order of the README's ops table (each module registers its ops).
from . import registry
from . import squeeze_2x2 as _squeeze_2x2  # isort: skip
from . import affine_coupling as _affine_coupling  # isort: skip
from . import image_coupling as _image_coupling  # isort: skip
from . import dequantize_logit as _dequantize_logit  # isort: skip
from . import masked_linear as _masked_linear  # isort: skip
from . import made_mlp as _made_mlp  # isort: skip
from . import made_sample as _made_sample  # isort: skip
from . import made_plan as _made_plan  # isort: skip

affine_coupling = _affine_coupling.affine_coupling
affine_coupling_packed = _affine_coupling.affine_coupling_packed
dequantize_logit = _dequantize_logit.dequantize_logit
image_coupling = _image_coupling.image_coupling
masked_linear = _masked_linear.masked_linear
degree_masked_linear = _masked_linear.degree_masked_linear
degrees_from_mask = _masked_linear.degrees_from_mask
made_mlp = _made_mlp.made_mlp
made_mlp_plan = _made_mlp.made_mlp_plan
squeeze_2x2 = _squeeze_2x2.squeeze_2x2
made_sample = _made_sample.made_sample
gaussian_made_sample = _made_sample.gaussian_made_sample
iaf_inverse = _made_sample.iaf_inverse
clear_sample_plans = _made_plan.clear_sample_plans

__all__ = ["affine_coupling", "affine_coupling_packed", "degree_masked_linear", "degrees_from_mask",
           "clear_sample_plans", "dequantize_logit",
           "gaussian_made_sample", "iaf_inverse", "image_coupling", "made_mlp", "made_mlp_plan",
           "made_sample", "masked_linear",
           "squeeze_2x2"]
