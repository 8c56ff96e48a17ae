"""Vocabulary-parallel (tensor-parallel) label-smoothed cross-entropy over torch.distributed.

The ranks of a process group each hold a slice of the vocabulary; they exchange the per-row
statistics of :mod:`labelsmooth.ops.rowmath` (three all-reduces in forward, none in backward)
and apply the same final formula as the single-process loss. Nothing else: the math is the
fused path's. See ``docs/parallel.md``.

DTensor logits sharded on the vocabulary need no call of their own:
:func:`labelsmooth.cross_entropy` hands them to :mod:`labelsmooth.parallel.dtensor`, which
runs :func:`vocab_parallel_cross_entropy` over the mesh dim's group.

Not imported by ``import labelsmooth``; ``import labelsmooth.parallel`` imports
``torch.distributed`` only.
"""

from labelsmooth.parallel._cross_entropy import vocab_parallel_cross_entropy
from labelsmooth.parallel._linear import vocab_parallel_linear_cross_entropy

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]
