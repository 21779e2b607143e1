"""Per-video 2176-d features for deepfake detection: ResNet-50 semantics plus temporal statistics.

Layout of one vector (see docs/deepfake.md):
    [0, 2048)     mean over the T sampled frames of the ResNet-50 global-average-pooled features
    [2048, 2112)  temporal std of those features (over T), averaged within 64 groups of 32 consecutive channels
    [2112, 2176)  flicker: mean |gray(frame + 1) - gray(frame)| of the T adjacent pairs on an 8x8 grid (computed
                  while decoding, ``datamodules.deepfake_videos.flicker_statistics``)
"""
from typing import Optional

import torch
from torch import Tensor, nn

from nets.resnet import resnet50

SEMANTIC_DIM, GROUPS, FLICKER_DIM = 2048, 64, 64
FEATURE_DIM = SEMANTIC_DIM + GROUPS + FLICKER_DIM  # 2176
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VideoFeatures(nn.Module):
    """uint8 frames (B, T, 3, H, W) and flicker statistics (B, 64) -> (B, 2176)."""

    def __init__(self, weights_path: Optional[str] = None) -> None:
        super().__init__()
        self.backbone = resnet50(weights_path=weights_path)
        self.backbone.fc = nn.Identity()  # the 2048-d pooled features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def frame_features(self, frames: Tensor) -> Tensor:
        """uint8 (N, 3, H, W) -> (N, 2048), ImageNet normalisation."""
        x = (frames.float() / 255 - self.mean) / self.std
        return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def forward(self, frames: Tensor, flicker: Tensor) -> Tensor:
        b, t = frames.shape[:2]
        per_frame = self.frame_features(frames.flatten(0, 1)).float().view(b, t, SEMANTIC_DIM)
        spread = per_frame.std(1, correction=0).view(b, GROUPS, SEMANTIC_DIM // GROUPS).mean(2)
        return torch.cat([per_frame.mean(1), spread, flicker.to(per_frame)], dim=1)
