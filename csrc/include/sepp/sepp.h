#pragma once

// sepp: Squeeze-and-Excitation networks as LibTorch modules.
#include <sepp/blocks.h>
#include <sepp/build_info.h>
#include <sepp/factories.h>
#include <sepp/inference.h>
#include <sepp/observe.h>
#include <sepp/ops.h>
#include <sepp/resnet.h>
#include <sepp/se_block.h>
#include <sepp/weights.h>
