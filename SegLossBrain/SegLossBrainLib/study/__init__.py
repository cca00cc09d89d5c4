"""The loss study of Wong et al. 2018: runs, evaluation and report."""
