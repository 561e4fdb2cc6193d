"""Small torch layers the built-in models need (this module imports torch: import it lazily)."""

from __future__ import annotations

from torch import Tensor, nn


class ChannelsFirst(nn.Module):
    """[n, height, width, channels] -> [n, channels, height, width], as convolutions expect."""

    def forward(self, images: Tensor) -> Tensor:
        return images.permute(0, 3, 1, 2)
