#pragma once
/// The training substrate: layers with explicit forward/backward, losses, optimizers, data.
#include "frugal/nn/module.hpp"
// Basic layers and losses: Linear, Flatten, ReLU, GELU, Dropout, SoftmaxCrossEntropy, MSELoss.
#include "frugal/nn/activation.hpp"
#include "frugal/nn/dropout.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/loss.hpp"
// Training machinery: optimizers and clipping, LR schedules, data, checkpoints.
#include "frugal/nn/optim.hpp"
#include "frugal/nn/schedule.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/checkpoint.hpp"
// Transformer: LayerNorm, Embedding, causal self-attention and the GPT model.
#include "frugal/nn/attention.hpp"
#include "frugal/nn/embedding.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/layer_norm.hpp"
// Convolutional layers over NCHW: Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d, BatchNorm2d.
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/pool.hpp"
// Shared models (MLP, digits CNN, GPT presets) and training loops, progress bar, metrics JSON.
#include "frugal/nn/models.hpp"
#include "frugal/nn/train.hpp"
// Low-rank layers: factorized Linear / Conv2d, factorize_model, LoRALinear.
#include "frugal/nn/lowrank_layers.hpp"
// Knowledge distillation: teacher cache, FitNets adapter, Distiller (losses: frugal/distill.hpp).
#include "frugal/nn/distiller.hpp"
// Pruning: Pruner (masked training), schedules, PruneFinetune, structured removal, SparseLinear.
#include "frugal/nn/prune_layers.hpp"
// Synchronous data parallel over a parallel::Communicator (buckets, overlap with backward).
#include "frugal/nn/data_parallel.hpp"
// Quantization: QAT layers (QatLinear, QatConv2d), quantized inference layers, ptq / prepare_qat.
#include "frugal/nn/quant_layers.hpp"
#include "frugal/nn/local_sgd.hpp"
#include "frugal/nn/zero.hpp"
