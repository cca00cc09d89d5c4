"""Fine-tuning a model version on a site's own (image, labelmap) pairs."""
