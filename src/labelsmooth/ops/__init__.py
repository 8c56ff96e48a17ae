"""Implementations of the label-smoothed cross-entropy: the reference and the fast paths."""
