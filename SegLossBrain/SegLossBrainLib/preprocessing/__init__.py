"""Between an image and the network: the network grid, resampling, intensity normalisation."""
