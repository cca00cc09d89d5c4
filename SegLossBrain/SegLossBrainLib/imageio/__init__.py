"""Reading, checking and writing volumes and segmentation files."""
