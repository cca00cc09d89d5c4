"""Clean-up of predicted probabilities before they become labels."""
