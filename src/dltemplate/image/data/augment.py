"""Image augmentation for a whole batch on the training device: a random draw per image, no Python loop.

A loop over images (torchvision's transforms take one draw per call) costs a Python call per image
and keeps a GPU waiting on the host; the one gather below does the whole batch in one pass on the
CPU and in one kernel on a GPU.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_and_flip(images: Tensor, padding: int, flip: bool) -> Tensor:
    """Pad (B, C, H, W) `images` with zeros by `padding`, crop each back at a random offset, and mirror
    each with probability 1/2 when `flip`; the same as torchvision's RandomCrop(padding) and
    RandomHorizontalFlip drawn per image."""
    if padding == 0 and not flip:
        return images
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    padded_h, padded_w = padded.shape[-2:]
    # flat offsets of one crop at the top-left corner, (C*H*W,), plain and mirrored left-right
    channel = torch.arange(channels, device=device)[:, None, None] * (padded_h * padded_w)
    row = torch.arange(height, device=device)[None, :, None] * padded_w
    col = torch.arange(width, device=device)[None, None, :]
    plain, mirrored = (channel + row + col).reshape(-1), (channel + row + col.flip(-1)).reshape(-1)
    # where each image's crop starts in the flattened batch, (B,)
    start = torch.arange(batch, device=device) * (channels * padded_h * padded_w)
    if padding:
        start = start + torch.randint(0, 2 * padding + 1, (batch,), device=device) * padded_w
        start = start + torch.randint(0, 2 * padding + 1, (batch,), device=device)
    if flip:
        offsets = torch.where((torch.rand(batch, device=device) < 0.5)[:, None], mirrored, plain)  # (B, C*H*W)
    else:
        offsets = plain.expand(batch, -1)
    return padded.reshape(-1).take(start[:, None] + offsets).reshape(batch, channels, height, width)
