"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words",
arXiv:2010.11929) in plain PyTorch, with the normalisation inside the model.

ViT-Tiny's sizes (Touvron et al. 2021, DeiT, arXiv:2012.12877): width 192, depth 12, 3 heads,
MLP 768; 5.7M parameters at 224x224 with 16x16 patches and 1,000 classes. Pre-norm blocks,
a class token and learned position embeddings; the head reads the class token.

Cost: ~1.3 GFLOPs per 224x224 image forward (197 tokens); attention is quadratic in tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adversa.errors import BadInput
from adversa.nets.normalize import Normalize, normalization_for


class Attention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patches of `patch` x `patch` pixels embedded to `dim`, `depth` transformer blocks."""

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        *,
        patch: int = 16,
        in_channels: int = 3,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp: int = 768,
        normalize: Normalize | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch or dim % heads or min(num_classes, depth, dim, mlp) < 1:
            raise BadInput(
                f"ViT needs image_size divisible by patch and dim by heads, got "
                f"image_size={image_size}, patch={patch}, dim={dim}, heads={heads}"
            )
        tokens = (image_size // patch) ** 2 + 1
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(self.normalize(x)).flatten(2).transpose(1, 2)
        cls = self.cls.expand(patches.shape[0], -1, -1)
        tokens = self.blocks(torch.cat([cls, patches], dim=1) + self.pos)
        return self.head(self.norm(tokens[:, 0]))


def build_vit_tiny(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ViT-Tiny for square (C, S, S) inputs: 16x16 patches from S >= 128, else 4x4 (CIFAR
    size: 64 tokens); ImageNet normalisation for colour inputs."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise BadInput(f"vit-tiny needs square (C, H, W) inputs, got shape {input_shape}")
    channels, side = input_shape[0], input_shape[1]
    patch = 16 if side >= 128 else 4
    return ViT(
        side,
        num_classes,
        patch=patch,
        in_channels=channels,
        normalize=normalization_for("imagenet", channels),
    )
