"""
The deep tokenizer's encoder side (paper Sec. 3.1): a frozen CLIP-ViT E turns each
keyframe into N patch tokens, a query transformer Q compresses them into N_q
continuous deep tokens. (The decoder side, the video diffusion model, is diffusion.py.)

    python tokenizer.py encode --ckpt out/tokenizer/ckpt.pt --manifest data/shapes/videos.csv --out data/shapes_tokens

writes the deep tokens of a whole manifest once, for the AR stage.
"""
import argparse
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


# -----------------------------------------------------------------------------
# Encoder E: an open_clip ViT, all tokens of its last transformer block

def create_clip(name, pretrained=""):
    """open_clip.create_model(name, pretrained) where `name` may also be one of the tiny
    configs shipped in config/open_clip/*.json (e.g. 'nanodicode-tiny')."""
    import open_clip  # slow import (3-5 s): only when a model is built
    open_clip.add_model_config(os.path.join(CONFIG_DIR, "open_clip"))
    return open_clip.create_model(name, pretrained=pretrained or None)


class FrameEncoder(nn.Module):
    """E: frames in [-1, 1] (B, 3, H, W) -> all tokens of the ViT's last block (B, N, C_clip)."""

    def __init__(self, clip_model, trainable=False):
        super().__init__()
        self.visual = clip_model.visual
        self.image_size = self.visual.image_size[0] if isinstance(self.visual.image_size, tuple) else self.visual.image_size
        self.width = self.visual.transformer.width
        self.num_tokens = self.visual.grid_size[0] * self.visual.grid_size[1] + 1  # patches + class token
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.trainable = trainable
        self.visual.requires_grad_(trainable)

    def forward(self, frames):
        x = (frames + 1) / 2  # [-1, 1] -> [0, 1]
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.visual.transformer(self.visual._embeds(x))  # (B, N, C_clip), class token first

    def train(self, mode=True):
        super().train(mode)
        if not self.trainable:
            self.visual.eval()  # a frozen encoder stays in eval mode (no dropout)
        return self


# -----------------------------------------------------------------------------
# Query transformer Q (paper Sec. 3.1): [queries, projected E tokens] -> self-attention -> queries

class Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, L, D)
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, D/heads), bidirectional
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block, as in nanoGPT but without the causal mask."""

    def __init__(self, dim, n_heads, mlp_ratio=4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class QueryTransformer(nn.Module):
    """Q: encoder tokens (B, N, C_clip) -> deep tokens (B, N_q, C), layer-normed (as the released model)."""

    def __init__(self, in_dim, dim, n_queries, n_layers, n_heads):
        super().__init__()
        self.n_queries = n_queries
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.proj_in = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(Block(dim, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, encoder_tokens):
        x = self.proj_in(encoder_tokens)  # (B, N, C)
        x = torch.cat([self.queries.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N_q + N, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x[:, :self.n_queries])  # (B, N_q, C)


class DeepTokenizer(nn.Module):
    """E + Q. `encode` takes images (B, 3, H, W) -> (B, N_q, C) or keyframes (B, T, 3, H, W) -> (B, T, N_q, C)."""

    def __init__(self, clip_model, n_queries=16, dim=1024, q_layers=4, q_heads=16, train_encoder=False):
        super().__init__()
        self.encoder = FrameEncoder(clip_model, trainable=train_encoder)
        self.query = QueryTransformer(self.encoder.width, dim, n_queries, q_layers, q_heads)
        self.n_queries, self.dim = n_queries, dim

    def encode(self, frames):
        if frames.dim() == 5:  # keyframe sequences: flatten frames into the batch
            B, T = frames.shape[:2]
            return self.encode(frames.flatten(0, 1)).view(B, T, self.n_queries, self.dim)
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"encode expects (B, 3, H, W) or (B, T, 3, H, W) frames, got {tuple(frames.shape)}")
        return self.query(self.encoder(frames))

    forward = encode
