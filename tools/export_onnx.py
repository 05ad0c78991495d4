#!/usr/bin/env python3
"""Export a diffusers-layout UNet to ONNX for the peer benchmark (ONNX Runtime Web).

Developer-side script (CI never runs it; its small outputs are committed). It needs torch,
diffusers, safetensors, onnx, onnxruntime and onnxscript, pinned in tools/requirements.txt:

    pip install -r tools/requirements.txt

The graph is written without weights: every initializer that is a tensor of the model's
safetensors file points into that file (ONNX external data, with the tensor's byte offset),
so the repository does not hold a second copy of the weights and both runtimes read the
very same bytes. A safetensors file is a JSON header followed by raw little-endian tensors,
which is exactly what ONNX external data expects.

The export is then checked: ONNX Runtime (CPU) on the graph must match diffusers' UNet.

Usage:
    python3 tools/export_onnx.py --unet www/models/default/unet --out tests/fixtures/onnx/default_unet.onnx
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from diffusers import UNet2DConditionModel

WEIGHTS = "diffusion_pytorch_model.safetensors"


class Wrapped(torch.nn.Module):
    """The UNet as ONNX sees it: three tensors in, the noise prediction out."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def safetensors_index(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """Tensor name -> (dtype, shape, absolute byte offset, byte length)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], base + start, end - start)
    return out


ONNX_DTYPE = {"F32": onnx.TensorProto.FLOAT, "F16": onnx.TensorProto.FLOAT16}


def point_into_weights(model: onnx.ModelProto, weights: Path) -> tuple[int, int]:
    """Replaces initializers that hold a safetensors tensor by references into the file.

    Where the file stores f16 and the graph computes in f32 (diffusers upcasts on load), the
    reference is an f16 initializer followed by a Cast, so the graph still reads the file's
    own bytes.
    """
    index = safetensors_index(weights)
    blob = weights.read_bytes()
    casts = []
    moved = kept = 0
    for init in model.graph.initializer:
        name = init.name.removeprefix("unet.")
        entry = index.get(name)
        if entry is None or list(init.dims) != entry[1]:
            kept += 1
            continue
        dtype, _, offset, length = entry
        stored = blob[offset : offset + length]
        values = onnx.numpy_helper.to_array(init)
        if dtype == "F32" and init.data_type == onnx.TensorProto.FLOAT:
            same = values.astype("<f4").tobytes() == stored
        elif dtype == "F16" and init.data_type == onnx.TensorProto.FLOAT:
            same = values.astype("<f2").tobytes() == stored and np.array_equal(
                values.astype("<f2").astype("<f4"), values
            )
            casts.append(onnx.helper.make_node(
                "Cast", [init.name + ".f16"], [init.name], to=onnx.TensorProto.FLOAT
            ))
            init.name += ".f16"
            init.data_type = onnx.TensorProto.FLOAT16
        else:
            same = False
        if not same:
            raise SystemExit(f"{name}: the exported values differ from the file's")
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        for key, value in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(length))):
            reference = init.external_data.add()
            reference.key, reference.value = key, value
        moved += 1
    for node in reversed(casts):
        model.graph.node.insert(0, node)
    return moved, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", required=True, type=Path, help="the diffusers unet/ folder")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    unet = UNet2DConditionModel.from_pretrained(args.unet).eval()
    cfg = unet.config
    size = cfg.sample_size
    torch.manual_seed(0)
    sample = torch.randn(2, cfg.in_channels, size, size)
    timestep = torch.tensor([500.0])
    context = torch.randn(2, 77, cfg.cross_attention_dim)

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "unet.onnx"
        # The TorchScript exporter without constant folding keeps each parameter as an
        # initializer under its own name, byte for byte, which the weight references need.
        torch.onnx.export(
            Wrapped(unet),
            (sample, timestep, context),
            raw,
            input_names=["sample", "timestep", "encoder_hidden_states"],
            output_names=["noise_pred"],
            opset_version=17,
            do_constant_folding=False,
            dynamo=False,
        )
        model = onnx.load(raw)
    moved, kept = point_into_weights(model, args.unet / WEIGHTS)
    for node in model.graph.node:  # source locations only: half the file otherwise
        node.doc_string = ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out)
    print(f"{args.out}: {moved} initializers point into {WEIGHTS}, {kept} kept inline, "
          f"{args.out.stat().st_size} bytes")

    # Check: ONNX Runtime on the exported graph (next to a copy of the weights) against torch.
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.out, Path(tmp) / "unet.onnx")
        shutil.copy(args.unet / WEIGHTS, Path(tmp) / WEIGHTS)
        session = ort.InferenceSession(str(Path(tmp) / "unet.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {
            "sample": sample.numpy(),
            "timestep": timestep.numpy(),
            "encoder_hidden_states": context.numpy(),
        })[0]
    with torch.no_grad():
        want = unet(sample, timestep, context).sample.numpy()
    err = float(np.abs(got - want).max())
    print(f"ONNX Runtime vs diffusers: max abs error {err:.2e} (outputs up to {np.abs(want).max():.2f})")
    if err > 1e-3:
        raise SystemExit("the exported graph does not match diffusers")


if __name__ == "__main__":
    main()
