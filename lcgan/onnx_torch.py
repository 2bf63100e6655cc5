"""Run a small convolutional ONNX graph as a torch module: on the GPU, batched and differentiable.

onnxruntime has no CUDA build on many machines, and its decoder cannot pass gradients; the
vaelight VAE's graphs use only the operators below, so executing their nodes with torch ops is
exact. (onnx2torch does the general job but does not translate ``auto_pad=SAME_UPPER``.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("Conv", "ConvTranspose", "LeakyRelu", "Add", "AveragePool")


def _same_pad(attrs: dict, where: str) -> int | None:
    """Symmetric padding of a stride-1 odd-kernel ``SAME_*`` conv; None when the node has explicit pads."""
    mode = attrs.get("auto_pad", b"NOTSET").decode() if isinstance(attrs.get("auto_pad"), bytes) else attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return None
    k, s = attrs["kernel_shape"], attrs.get("strides", [1, 1])
    if mode not in ("SAME_UPPER", "SAME_LOWER") or any(v % 2 == 0 for v in k) or any(v != 1 for v in s):
        raise NotImplementedError(f"{where}: auto_pad={mode} with kernel {k} and strides {s} is not supported")
    return k[0] // 2


class OnnxConvNet(nn.Module):
    """The nodes of an ONNX graph made of :data:`OPS`, executed in order; returns the graph's outputs as a list."""

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError as e:
            raise ImportError("running an ONNX VAE with vae.backend=torch needs the onnx package: pip install onnx") from e
        graph = onnx.load(path).graph
        self.weights = nn.ParameterDict()
        self._names: dict[str, str] = {}  # ONNX initializer name -> ParameterDict key (no dots allowed there)
        for i, init in enumerate(graph.initializer):
            self._names[init.name] = f"w{i}"
            self.weights[f"w{i}"] = nn.Parameter(torch.from_numpy(numpy_helper.to_array(init).copy()).float(), requires_grad=False)
        self.nodes = []
        for node in graph.node:
            if node.op_type not in OPS:
                raise NotImplementedError(f"{path}: ONNX operator {node.op_type} is not supported by vae.backend=torch "
                                          f"(supported: {', '.join(OPS)}); use vae.backend=onnxruntime")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.input_name = graph.input[0].name
        self.output_names = [o.name for o in graph.output]
        self.path = path

    def _get(self, values: dict, name: str) -> torch.Tensor:
        return values[name] if name in values else self.weights[self._names[name]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values = {self.input_name: x}
        for op, ins, outs, a in self.nodes:
            args = [self._get(values, n) for n in ins if n]
            where = f"{self.path}: {op} -> {outs[0]}"
            if op == "LeakyRelu":
                y = F.leaky_relu(args[0], a.get("alpha", 0.01))
            elif op == "Add":
                y = args[0] + args[1]
            elif op == "AveragePool":
                pads = a.get("pads", [0, 0, 0, 0])
                if any(pads) or _same_pad(a, where):
                    raise NotImplementedError(f"{where}: padded AveragePool is not supported")
                y = F.avg_pool2d(args[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]))
            else:
                same = _same_pad(a, where)
                pads = a.get("pads", [0, 0, 0, 0])
                if same is None and (pads[0] != pads[2] or pads[1] != pads[3]):
                    raise NotImplementedError(f"{where}: asymmetric pads {pads} are not supported")
                pad = same if same is not None else tuple(pads[:2])
                bias = args[2] if len(args) > 2 else None
                conv = F.conv2d if op == "Conv" else F.conv_transpose2d
                extra = {} if op == "Conv" else {"output_padding": tuple(a.get("output_padding", [0, 0]))}
                y = conv(args[0], args[1], bias, stride=tuple(a.get("strides", [1, 1])), padding=pad,
                         dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1), **extra)
            values[outs[0]] = y
        return [values[n] for n in self.output_names]
