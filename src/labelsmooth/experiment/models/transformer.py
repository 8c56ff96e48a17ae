"""A small decoder-only Transformer language model (character or byte level).

Pre-norm blocks (Xiong et al. 2020): ``x + attn(LN(x))`` then ``x + mlp(LN(x))``; causal
self-attention by :func:`torch.nn.functional.scaled_dot_product_attention`
(``is_causal=True``); learned token and position embeddings; a final LayerNorm. The model
returns **hidden states**, not logits: the head's weight :attr:`TransformerLM.head` is meant
for :func:`labelsmooth.linear_cross_entropy`, which computes the loss without materializing
the ``(B, T, V)`` logits; :meth:`TransformerLM.logits` gives them when they are wanted
(evaluation, calibration).

Right padding needs no attention mask: with causal attention, position ``t`` only sees
positions ``<= t``, so padding after a sequence's end never changes its real positions.

Shapes: B batch, T time (<= ``max_len``), D ``d_model``, H heads, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalSelfAttention", "Block", "TransformerLM"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention.

    Args:
        d_model: Width D (divisible by ``n_heads``).
        n_heads: Heads H.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``; position t attends to positions <= t."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, D)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D/H)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm Transformer block: attention then a 4x GELU MLP, each with a residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    """Decoder-only language model returning hidden states; the head is :attr:`head`.

    Args:
        vocab_size: Tokens V (padding included).
        d_model: Width D.
        n_layers: Blocks.
        n_heads: Attention heads (dividing D).
        max_len: Longest input T.
        padding_idx: The padding token (its embedding is zero and gets no gradient).

    Example:
        >>> import torch, labelsmooth
        >>> model = TransformerLM(vocab_size=11, d_model=16, n_layers=1, n_heads=2, max_len=8)
        >>> x = torch.randint(1, 11, (2, 8))
        >>> h = model(x)  # (2, 8, 16)
        >>> loss = labelsmooth.linear_cross_entropy(h, model.head.weight, x, ignore_index=0)
        >>> model.logits(x).shape
        torch.Size([2, 8, 11])
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        max_len: int = 128,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        for name, v in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("max_len", max_len),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={v!r}")
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        # GPT-2's scheme: N(0, 0.02) weights, zero biases, residual projections scaled by
        # 1/sqrt(2 * layers) so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = (
                    0.02 / math.sqrt(2 * n_layers)
                    if name.endswith(("proj.weight", "mlp.2.weight"))
                    else 0.02
                )
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if self.tok.padding_idx is not None:
            with torch.no_grad():
                self.tok.weight[self.tok.padding_idx].zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> final hidden states ``(B, T, D)`` (after the last LayerNorm)."""
        t = idx.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        pos = torch.arange(t, device=idx.device)  # (T,)
        x = self.tok(idx) + self.pos(pos)  # (B, T, D)
        for block in self.blocks:
            x = block(x)  # (B, T, D)
        return self.ln_f(x)  # (B, T, D)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` (materialized; for evaluation)."""
        return self.head(self(idx))
