"""The ops as PyTorch sees them (custom ops with fake implementations and autograd), and
the public functions that run them on the chosen backend."""

from . import squeeze_2x2 as _squeeze_2x2

squeeze_2x2 = _squeeze_2x2.squeeze_2x2

# Each op's 'auto' choices per device type (see fastflow.backend.resolve).
AUTO_ORDERS = {"squeeze_2x2": _squeeze_2x2.AUTO_ORDER}

__all__ = ["squeeze_2x2", "AUTO_ORDERS"]
