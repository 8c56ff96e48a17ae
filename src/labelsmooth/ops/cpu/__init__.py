"""The CPU backend: the C row kernel (source, build and trust), its launcher and the worker pool."""
