import sys
from SegLossBrainLib.cli import main
sys.exit(main())
