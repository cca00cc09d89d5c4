"""Segmenting a volume: image in, labelmap on exactly its grid out."""
