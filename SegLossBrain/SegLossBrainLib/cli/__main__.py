"""``python -m SegLossBrainLib.cli``: what the Slicer module and ``torchrun`` run."""
from . import console_main

console_main()
