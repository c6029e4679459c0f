"""An independent, functional re-statement of the original's network forward, for checking the key mapping.

Written from the structure of the original (guided-diffusion ``UNetModel`` as configured by Med-DDPM /
GliomaGen: res-blocks without scale-shift norm, conv downsampling, trilinear upsampling + conv, one
attention block in the middle with a conv1d ``qkv`` and the *legacy* head ordering, sinusoidal time
embedding with max period 1000), reading the original's own state-dict keys. It shares no code with the
project's network or mapping, so agreement between the two is evidence that the mapping is right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def sinusoid(t: Tensor, dim: int, period: float) -> Tensor:
    """``[cos(t f_i), sin(t f_i)]``, ``f_i = period^(-i/half)``, computed in float64 numpy then cast."""
    half = dim // 2
    f = np.exp(-math.log(period) * np.arange(half) / half)
    a = t.double().numpy()[:, None] * f[None, :]
    return torch.from_numpy(np.concatenate([np.cos(a), np.sin(a)], axis=1)).float()


class OriginalUNet:
    """Forward of the original's network from its state dict (keys without ``denoise_fn.``).

    Args:
        sd: the state dict.
        channels: channels per level (``model_channels * channel_mult``).
        num_res_blocks: res-blocks per level on the way down.
        groups: GroupNorm groups (the original: 32).
        heads: attention heads of the middle block (the original: 1).
        period: time-embedding max period (the original: 1000).
    """

    def __init__(
        self,
        sd: Mapping[str, Tensor],
        channels: list[int],
        num_res_blocks: int,
        groups: int,
        heads: int,
        period: float = 1000.0,
    ) -> None:
        self.sd, self.channels, self.nrb = sd, channels, num_res_blocks
        self.groups, self.heads, self.period = groups, heads, period

    def _w(self, key: str) -> Tensor:
        return self.sd[key]

    def _norm(self, x: Tensor, key: str) -> Tensor:
        return F.group_norm(x, self.groups, self._w(f"{key}.weight"), self._w(f"{key}.bias"), eps=1e-5)

    def _conv(self, x: Tensor, key: str, stride: int = 1) -> Tensor:
        w = self._w(f"{key}.weight")
        return F.conv3d(x, w, self._w(f"{key}.bias"), stride=stride, padding=w.shape[-1] // 2)

    def _res(self, x: Tensor, emb: Tensor, key: str) -> Tensor:
        h = self._conv(F.silu(self._norm(x, f"{key}.in_layers.0")), f"{key}.in_layers.2")
        e = F.linear(F.silu(emb), self._w(f"{key}.emb_layers.1.weight"), self._w(f"{key}.emb_layers.1.bias"))
        h = h + e[:, :, None, None, None]
        h = self._conv(F.silu(self._norm(h, f"{key}.out_layers.0")), f"{key}.out_layers.3")
        skip = self._conv(x, f"{key}.skip_connection") if f"{key}.skip_connection.weight" in self.sd else x
        return skip + h

    def _attention(self, x: Tensor, key: str) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = F.conv1d(
            self._norm(flat, f"{key}.norm"), self._w(f"{key}.qkv.weight"), self._w(f"{key}.qkv.bias")
        )
        ch = c // self.heads
        # legacy order: per head, its q, k and v rows one after the other
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, -1).split(ch, dim=1)
        weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
        a = torch.einsum("bts,bcs->bct", weights, v).reshape(b, c, -1)
        h = F.conv1d(a, self._w(f"{key}.proj_out.weight"), self._w(f"{key}.proj_out.bias"))
        return (flat + h).reshape(b, c, *spatial)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        emb = sinusoid(t, self.channels[0], self.period)
        emb = F.linear(emb, self._w("time_embed.0.weight"), self._w("time_embed.0.bias"))
        emb = F.linear(F.silu(emb), self._w("time_embed.2.weight"), self._w("time_embed.2.bias"))
        h = self._conv(x, "input_blocks.0.0")
        hs = [h]
        k = 1
        levels = len(self.channels)
        for level in range(levels):
            for _ in range(self.nrb):
                h = self._res(h, emb, f"input_blocks.{k}.0")
                hs.append(h)
                k += 1
            if level != levels - 1:
                h = self._conv(h, f"input_blocks.{k}.0.op", stride=2)
                hs.append(h)
                k += 1
        h = self._res(h, emb, "middle_block.0")
        h = self._attention(h, "middle_block.1")
        h = self._res(h, emb, "middle_block.2")
        k = 0
        for level in reversed(range(levels)):
            for i in range(self.nrb + 1):
                h = self._res(torch.cat([h, hs.pop()], dim=1), emb, f"output_blocks.{k}.0")
                if level and i == self.nrb:
                    size = [2 * s for s in h.shape[2:]]
                    h = self._conv(F.interpolate(h, size=size, mode="trilinear"), f"output_blocks.{k}.1.conv")
                k += 1
        h = F.silu(self._norm(h, "out.0"))
        return self._conv(h, "out.2")
