"""``python -m SegLossBrainLib.cli``: what the Slicer module and ``torchrun`` run."""
import sys

from . import main

sys.exit(main())
