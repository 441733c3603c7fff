#pragma once
/// Pruning and sparsity: importance scores, unstructured / global / N:M masks, sparse formats
/// (CSR, BSR, 2:4) and sparse-dense products. The nn integration is frugal/nn/prune_layers.hpp.
#include "frugal/prune/mask.hpp"
#include "frugal/prune/score.hpp"
#include "frugal/prune/sparse.hpp"
