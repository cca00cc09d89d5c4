"""The network on a CPU without PyTorch: an OpenVINO graph built from the model file's verified weights.

Importing torch takes about a second, and PyTorch's eager convolutions are slower on a CPU than OpenVINO's
(BENCHMARKS.md), so a single scan on a CPU runs here when OpenVINO is installed: ``openvino_graph.py`` writes the
network's graph directly from the safetensors arrays (no exported file to trust or keep in step), and
``runner.py`` compiles it for one grid and runs it. Everything else on the way (grid, back-projection, QC) is
numpy and SimpleITK, so the whole command never imports torch.
"""
