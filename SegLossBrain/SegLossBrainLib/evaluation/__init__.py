"""Scores of a segmentation against a reference: Dice, HD95, volume difference."""
