#pragma once
/// Everything in frugal: one umbrella per module.
#include "frugal/core.hpp"
