"""Adapters for training frameworks, each imported only when asked for.

``import labelsmooth.integrations`` imports nothing optional; the adapters live in submodules:

* :mod:`labelsmooth.integrations.transformers`: a ``compute_loss_func`` for Hugging Face's
  ``Trainer`` (causal-LM shift, token and sequence classification, ``num_items_in_batch``)
  and the ``class_mask`` helpers for a tokenizer's padding and special tokens.

Lightning needs no adapter: :class:`labelsmooth.LabelSmoothingCrossEntropy` is an
``nn.Module`` (see ``examples/lightning_module.py``).
"""

__all__: list[str] = []
