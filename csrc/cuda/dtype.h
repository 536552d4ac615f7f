// The float types the CUDA launchers take (plain C++: included by the host-side bindings).
#pragma once

namespace fastflow::cuda {

enum class DType : int { Float32, Float64, Float16, BFloat16 };

}  // namespace fastflow::cuda
