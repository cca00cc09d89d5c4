"""Constants of the network grid, shared by inference (``grid.py``) and training (``synthesis/generator.py``)."""

NETWORK_SPACING_MM = 1.5  # isotropic voxel size the network sees, in mm
SIZE_MULTIPLE = 16  # the network pools four times by 2
