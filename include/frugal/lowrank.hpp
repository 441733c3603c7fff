#pragma once
/// Low-rank decomposition: SVD / QR, randomized SVD, rank selection, Tucker-2 and CP for
/// convolution kernels. Tensor level; the nn rewrite is frugal/nn/lowrank_layers.hpp.
#include "frugal/lowrank/randomized_svd.hpp"
#include "frugal/lowrank/rank.hpp"
#include "frugal/lowrank/response.hpp"
#include "frugal/lowrank/svd.hpp"
#include "frugal/lowrank/tensor_decomp.hpp"
