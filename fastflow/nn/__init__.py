"""Drop-in modules: the reference models' constructor arguments and state_dict keys, on
fastflow's kernels. (The coupling, masked-linear and MADE modules come with their kernels.)"""

__all__: list[str] = []
