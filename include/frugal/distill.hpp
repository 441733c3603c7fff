#pragma once
/// Knowledge distillation: response (logit), feature (hint, attention) and relation losses with
/// their gradients, on tensors (no dependency on nn). The trainer is nn::Distiller
/// (frugal/nn/distiller.hpp). Guide: docs/distill.md.
#include "frugal/distill/feature.hpp"
#include "frugal/distill/relation.hpp"
#include "frugal/distill/response.hpp"
