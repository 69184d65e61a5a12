"""Polygraphy network script: register the SelectiveScan plugin, then parse the ONNX file.

`polygraphy run --plugins LIB` only dlopens LIB, which registers nothing for a library that
exports TensorRT's loader entry points (getCreators); the parser then silently inlines each
SelectiveScan node's ONNX function and the engine runs, slowly, without the plugin. This script
loads the library through TensorRT's plugin registry before the parser runs and stops unless
every SelectiveScan node became a plugin layer (the check `mambacsr-rt build` makes):

    polygraphy run final_t64.onnx --onnxrt --save-inputs in.json --save-outputs ort.json
    MAMBACSR_ONNX=final_t64.onnx MAMBACSR_PLUGIN=build/libmambacsr_plugins.so \\
        polygraphy run plugins/polygraphy_network.py --model-type=trt-network-script --trt \\
        --load-inputs in.json --load-outputs ort.json --atol 1e-3 --rtol 1e-3

MAMBACSR_STRONGLY_TYPED=0 parses weakly typed (TensorRT 10 with --fp16); the default is strongly
typed, the precision coming from the ONNX file (the only mode of TensorRT 11).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: runtime.engine_cache, runtime.trt_common


def load_network():
    import tensorrt as trt
    from polygraphy.backend.trt import NetworkFromOnnxPath

    from runtime.engine_cache import check_plugin_layers
    from runtime.trt_common import load_plugin

    onnx_path = os.environ["MAMBACSR_ONNX"]
    plugin = os.environ["MAMBACSR_PLUGIN"]
    load_plugin(trt, plugin, trt.Logger(trt.Logger.WARNING))  # registry.load_library + creator check
    strongly_typed = os.environ.get("MAMBACSR_STRONGLY_TYPED", "1") != "0"
    builder, network, parser = NetworkFromOnnxPath(onnx_path, strongly_typed=strongly_typed)()
    check_plugin_layers(trt, network, onnx_path, plugin)
    return builder, network, parser
