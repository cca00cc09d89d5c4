"""The network's forward pass on a real head's network grid, engine against engine, in one run.

    python bench/speed/engines.py [--volume FILE] [--model NAME|PATH] [--threads 2] [--repeats 3]
                                  [--engines torch-fp32,torch-bf16,torch-bf16-fused,openvino-bf16,...]

The input is the tensor ``segment`` would give the network for the volume (its planned grid, resampled and
normalised). Every engine runs the same weights; for each, the median of ``--repeats`` forward passes after one
warm-up, its one-off preparation time (conversion, compilation), and its agreement with PyTorch fp32: the largest
probability difference and the share of voxels whose argmax differs. Engines whose package is missing are
reported as such, never silently skipped. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import volume_256  # noqa: E402

ENGINES = ("torch-fp32", "torch-bf16", "torch-bf16-fused", "openvino-fp32", "openvino-bf16", "onnxruntime-fp32")


def network_input(volume: Path, model: str | None):
    from SegLossBrainLib.imageio.volumes import read_image
    from SegLossBrainLib.inference.segment import load_network, prepare_image

    prepared = prepare_image(read_image(str(volume)))
    network, _ = load_network(model, torch.device("cpu"))
    return network, prepared.tensor


def torch_engine(network, precision: str, fused: bool):
    from SegLossBrainLib.networks.inference_graph import fused_for_inference

    net = fused_for_inference(network) if fused else network
    dtype = torch.bfloat16 if precision == "bf16" else None

    def run(x):
        x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            return torch.softmax(net(x).float(), dim=1)[0]
    return run


def openvino_engine(network, example, precision: str):
    import openvino as ov

    from SegLossBrainLib.networks.inference_graph import fused_for_inference

    model = ov.convert_model(fused_for_inference(network).to(memory_format=torch.contiguous_format),
                             example_input=example)
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = ov.Core().compile_model(model, "CPU", config)

    def run(x):
        logits = torch.from_numpy(compiled(x.numpy())[0])
        return torch.softmax(logits, dim=1)[0]
    return run


def onnxruntime_engine(network, example):
    import tempfile

    import onnxruntime as ort

    from SegLossBrainLib.networks.inference_graph import fused_for_inference

    path = Path(tempfile.mkdtemp()) / "net.onnx"
    torch.onnx.export(fused_for_inference(network).to(memory_format=torch.contiguous_format), example, str(path),
                      input_names=["image"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"image": {2: "d", 3: "h", 4: "w"}, "logits": {2: "d", 3: "h", 4: "w"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x):
        logits = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        return torch.softmax(logits, dim=1)[0]
    return run


def build(name: str, network, example):
    if name.startswith("torch-"):
        return torch_engine(network, "bf16" if "bf16" in name else "fp32", name.endswith("fused"))
    if name.startswith("openvino-"):
        return openvino_engine(network, example, name.split("-")[1])
    if name == "onnxruntime-fp32":
        return onnxruntime_engine(network, example)
    raise SystemExit(f"unknown engine {name}; choose from {', '.join(ENGINES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volume", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, tensor = network_input(volume_256(args.volume), args.model)
    reference = None
    print(f"network grid {list(tensor.shape[2:])}, {args.threads} threads, median of {args.repeats}\n")
    print("| engine | forward s (median) | runs | preparation s | max prob. diff vs torch fp32 | argmax differs |")
    print("|---|---|---|---|---|---|")
    for name in args.engines.split(","):
        try:
            started = time.perf_counter()
            run = build(name, network, tensor)
            run(tensor)  # warm-up (first-call kernel selection)
            prepared = time.perf_counter() - started
        except ImportError as error:
            print(f"| {name} | not installed ({error.name}) | | | | |")
            continue
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            probabilities = run(tensor)
            times.append(time.perf_counter() - started)
        if reference is None and name == "torch-fp32":
            reference = probabilities
        if reference is not None:
            difference = float((probabilities - reference).abs().max())
            differs = float((probabilities.argmax(0) != reference.argmax(0)).float().mean())
            agreement = f"{difference:.4f} | {100 * differs:.3f} %"
        else:
            agreement = "(no fp32 reference run) |"
        print(f"| {name} | {statistics.median(times):.2f} | {' / '.join(f'{t:.2f}' for t in times)} | "
              f"{prepared:.1f} | {agreement} |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
