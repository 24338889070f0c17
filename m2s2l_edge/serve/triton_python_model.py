"""Triton Python-backend model: our ONNX Runtime runner behind Triton (copied into a repository as ``1/model.py``).

It runs inside Triton's Python backend stub, whose interpreter must see ``m2s2l_edge`` (installed without its heavy
dependencies is enough: ``pip install --no-deps m2s2l-edge`` plus ``onnx`` and ``onnxruntime``; a plugin-flavour ONNX
also needs our native op library for its SelectiveScan nodes, built on first use with g++ and ONNX Runtime's headers,
see ``m2s2l_edge.ops.ort_library``). The model is the same
``OnnxRuntimeBackend`` that ``m2s2l-edge eval --onnx`` uses, so served and local scores come from one code path.

Dynamic batching hands ``execute`` several requests at once: their clips are concatenated into one batch, run in one
call, and split back in request order.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameters(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        from m2s2l_edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

        config = json.loads(args["model_config"])
        params = _parameters(config)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        threads = int(params.get("m2s2l.threads") or 0) or None
        self.backend = OnnxRuntimeBackend(path, device="cpu", threads=threads)
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        clips = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [c.shape[0] for c in clips]
        try:
            outputs = self.backend.run(np.concatenate(clips).astype(np.float32, copy=False))
        except (ValueError, RuntimeError) as e:  # a bad clip fails its batch, not the server
            error = pb_utils.TritonError(f"m2s2l: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start:start + n]))
                       for name in self.output_names]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
