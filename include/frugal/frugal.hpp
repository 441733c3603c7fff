#pragma once
/// Everything in frugal: one umbrella per module.
#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/distill.hpp"
#include "frugal/lowrank.hpp"
#include "frugal/nn.hpp"
#include "frugal/parallel.hpp"
#include "frugal/prune.hpp"
#include "frugal/quant.hpp"
