// One-pass MADE / MAF sampling CUDA launcher (plan and rules: ../made_sample.h); no torch
// headers. The binding packs the layers (as the CPU kernel does) into the flat device arrays
// below; one persistent kernel launch then runs the whole step loop.
//
// Nothing here checks the plan's values (that would be a copy to the host, a wait, at every
// call): the binding clamps the unit orders into range (they feed its gathers too) and the
// kernel clamps every offset and range it reads, so that a bad plan gives wrong samples,
// never an access out of bounds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "../made_sample_math.h"
#include "dtype.h"

namespace fastflow::cuda {


// Where one layer's data lie in the flat arrays of MadeSampleArgs, and its wiring.
struct MadeLayer {
  int64_t weight_offset;  // first element of the layer's packed rows in `weights`
  int64_t range_offset;   // first input position of the layer in `ranges` (Σ inputs before it)
  int64_t acc_offset;     // first output position of the layer in `biases`, `contexts`,
                          // `skip_positions` and the accumulators (Σ outputs before it)
  int64_t inputs, outputs;
  int32_t skip_source;    // −1, or the earlier layer whose outputs are added to this one's
  int32_t activated;      // whether the next layer reads activation(this layer's outputs)
};

// The layer table travels in the kernel's arguments (a table in device memory would be a copy
// to the device, and a wait, at every call), which must fit in 4 KiB.
constexpr int kMaxMadeLayers = 48;
constexpr int kMaxRuleParams = 2;

struct MadeSampleArgs {
  const void* noise;              // [samples, dims] storage type, contiguous
  const void* weights;            // per layer [inputs, outputs]: W⊙M in sorted positions
                                  // (row = input position), opmath type, concatenated
  const void* biases;             // per layer [outputs], sorted, opmath type: [acc_width]
  const int64_t* ranges;          // per layer push_ranges [inputs, 2], concatenated: any values
  const int64_t* finalize;        // [num_layers − 1, steps + 2]: the finalize_offsets, any values
  const int64_t* step_offsets;    // [steps + 1], any values
  const int64_t* dim_order;       // [dims]: unit_orders[0], each in [0, dims)
  const int64_t* out_order;       // [last layer's outputs]: unit_orders[num_layers], each in
                                  // [0, last layer's outputs)
  const void* contexts;           // [samples, acc_width] storage type, sorted like the
                                  // accumulators: every layer's context term (0 where none),
                                  // or null when no layer has one
  const int64_t* skip_positions;  // [acc_width]: at a layer with a skip source k, indexed
                                  // by k's positions, the layer's position of the same unit;
                                  // each in range. Null when no layer has a skip source
  int64_t samples, dims, num_layers, steps;
  int64_t acc_width;              // Σ outputs over the layers
  SampleRule rule;
  Activation activation;
  int64_t per_dim;                // outputs of the last layer per dimension
  double rule_params[kMaxRuleParams];
  DType dtype;
  MadeLayer layers[kMaxMadeLayers];  // the first num_layers
};

// Bytes of global scratch the launch needs for the accumulators: 0 when they fit in shared
// memory. Depends on the current device.
cudaError_t made_sample_scratch_bytes(const MadeSampleArgs& args, size_t* bytes);

// values: [samples, dims] and outputs: [samples, last layer's outputs], storage type,
// contiguous; log_terms: [samples] of the opmath type (float, or double for double);
// scratch: made_sample_scratch_bytes(args) bytes, or null when that is 0.
cudaError_t launch_made_sample(const MadeSampleArgs& args, void* values, void* log_terms,
                               void* outputs, void* scratch, cudaStream_t stream);

}  // namespace fastflow::cuda
