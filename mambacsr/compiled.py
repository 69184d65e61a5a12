"""Fused inference: torch.compile applied per block, so the glue between the scans (LayerNorms,
gates, SiLU/GELU, residual adds, transposes, projection epilogues) runs as a few generated
kernels instead of dozens of small ones.

Why per block ("regional") and not the whole model: MambaCSR repeats the same block dozens of
times, and blocks differ only in constants (their scan directions), so Inductor generates the
same kernels for all of them and compiles each once (its in-memory and on-disk caches share
them); the whole model as one graph took minutes to compile per input shape. No autotuning
(default mode): first use costs tens of seconds per input shape, later processes hit the
on-disk cache. The scan itself is the opaque custom op (its fake kernel gives Inductor shapes).
"""
from __future__ import annotations

import torch.nn as nn

# Blocks that differ only in constants each cost a (cheap, cache-hit) recompile: allow them all.
_RECOMPILE_LIMIT = 256


def compile_blocks(model: nn.Module) -> nn.Module:
    """Compile every residual block and cross-scale fusion of `model` in place; returns it.

    Inference only (the compiled code is traced under no_grad). Safe to capture in a CUDA graph
    after a warm-up call per input shape."""
    from .model import LW_SS2D, Cross_SS2D, RLMBlock

    import torch._dynamo.config as dynamo_config

    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, _RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "accumulated_cache_size_limit"):
        dynamo_config.accumulated_cache_size_limit = max(dynamo_config.accumulated_cache_size_limit,
                                                        _RECOMPILE_LIMIT * 4)
    for module in model.modules():
        if isinstance(module, LW_SS2D):
            # Column-first blocks read rows of the transposed grid; compiled, the transposes fuse.
            module.transpose_column_scans = True
        if isinstance(module, (RLMBlock, Cross_SS2D)):
            module.compile(dynamic=False)
    return model
