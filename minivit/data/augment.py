"""Batched data augmentation in pure torch, run on the device the batch lives on.

Training images stay uint8 in memory (N, C, h, w) and are augmented a whole batch at a time on the
GPU (or CPU): one affine_grid + grid_sample per batch does random-resized-crop, horizontal flip,
rotation and the resize to the model input together, so each output pixel is interpolated once.

    x = train_transform(images_u8, aug, generator)    # uint8 (B, 1|3, h, w) -> float (B, aug.channels, S, S)
    y = one_hot(targets, 7, smoothing=0.1)             # (B,) -> (B, 7)
    x, y = cutmix(x, y, alpha=1.0, generator=cpu_generator)

Channels: the output has ``aug.channels`` channels, whatever the input has. Grayscale is repeated
to three channels for RGB models (a view, no copy); RGB is converted to luminance (ITU-R 601:
0.299 R + 0.587 G + 0.114 B) for one-channel models, before any other work, so the augmentation
then runs on a third of the data.

Determinism: every random draw takes a generator. The per-pixel transforms draw on the data's device
(torch.Generator(device="cuda").manual_seed(0) for CUDA batches); CutMix/MixUp draw only a few
numbers per batch that Python needs (lambda, box corners), so they take a CPU generator and never make
the GPU sync with the host. With generator=None torch's global RNG is used.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..common.cli import is_number
from ..common.errors import ConfigError


@dataclass
class AugmentConfig:
    """Augmentation settings. The defaults are mild: faces are centred and 48x48 FER2013 faces
    lose identity-relevant detail quickly under strong crops.

    >>> aug = AugmentConfig(image_size=64)
    >>> x = train_transform(torch.zeros(2, 1, 48, 48, dtype=torch.uint8), aug)
    >>> x.shape, x.dtype
    (torch.Size([2, 3, 64, 64]), torch.float32)
    >>> eval_transform(torch.zeros(2, 3, 48, 48, dtype=torch.uint8), AugmentConfig(48, channels=1)).shape
    torch.Size([2, 1, 48, 48])
    """

    image_size: int                              # model input side S (or an (H, W) tuple)
    channels: int = 3                           # channels the model takes (its in_chans): 1 or 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)   # Google's ViTs expect [-1, 1] inputs: (x - 0.5) / 0.5
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    scale: tuple[float, float] = (0.8, 1.0)     # crop area as a fraction of the image area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio w/h, sampled log-uniformly
    hflip: float = 0.5                          # probability of a horizontal flip (faces are ~symmetric)
    rotate_deg: float = 10.0                    # rotation uniform in [-rotate_deg, rotate_deg]
    brightness: float = 0.2                     # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.2                       # scale deviations from the image mean by [1 - c, 1 + c]
    erase: float = 0.0                          # probability of random erasing: a box of noise over part of the face

    def __post_init__(self):
        """Each setting's range, in one line naming every bad one (a TrainConfig.augment dict can hold anything)."""
        def pair(v, ok):
            return isinstance(v, (tuple, list)) and len(v) == 2 and all(is_number(x) for x in v) and ok(*v)

        checks = {
            "scale": (pair(self.scale, lambda lo, hi: 0 < lo <= hi <= 1), "two numbers 0 < lo <= hi <= 1"),
            "ratio": (pair(self.ratio, lambda lo, hi: 0 < lo <= hi), "two numbers 0 < lo <= hi"),
            "hflip": (is_number(self.hflip) and 0 <= self.hflip <= 1, "a probability in [0, 1]"),
            "rotate_deg": (is_number(self.rotate_deg) and self.rotate_deg >= 0, "a number of degrees >= 0"),
            "brightness": (is_number(self.brightness) and 0 <= self.brightness < 1, "a number in [0, 1)"),
            "contrast": (is_number(self.contrast) and 0 <= self.contrast < 1, "a number in [0, 1)"),
            "erase": (is_number(self.erase) and 0 <= self.erase <= 1, "a probability in [0, 1]"),
        }
        problems = [f"{name}={getattr(self, name)!r} (must be {want})" for name, (ok, want) in checks.items() if not ok]
        if problems:
            raise ConfigError("bad augmentation setting: " + "; ".join(problems))


def augment_config(image_size, channels: int, overrides: dict) -> AugmentConfig:
    """The training augmentation: AugmentConfig with ``overrides`` (TrainConfig.augment) on top; an unknown
    key or a value out of range is a one-line ConfigError. image_size and channels are the model's own.

    >>> augment_config(48, 1, {"rotate_deg": 0}).rotate_deg
    0
    >>> try:
    ...     augment_config(48, 1, {"rotate": 5})
    ... except ConfigError as e:
    ...     print(str(e).split(" (")[0])
    unknown augmentation setting(s): rotate
    """
    known = [f for f in AugmentConfig.__dataclass_fields__ if f not in ("image_size", "channels")]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"unknown augmentation setting(s): {', '.join(map(str, unknown))} (known: {', '.join(known)})")
    return AugmentConfig(image_size=image_size, channels=channels, **overrides)


def _check_batch(images: torch.Tensor, aug: AugmentConfig) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"images must be (B, 1|3, H, W), got {tuple(images.shape)}")
    if aug.channels not in (1, 3):
        raise ConfigError(f"AugmentConfig.channels must be 1 or 3, not {aug.channels!r}")


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    gd = generator.device
    if gd.type != device.type or (gd.index is not None and device.index is not None and gd.index != device.index):
        raise ConfigError(f"generator is on {gd} but the images are on {device}: "
                          f"make it with torch.Generator(device={str(device)!r})")


def _to_float(images: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (float input is taken to be in [0, 1] already); RGB input
    becomes luminance here when the model takes one channel."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()  # (B, C, h, w)
    if aug.channels == 1 and x.shape[1] == 3:
        # ITU-R 601 luma weights as Python scalars: no host-to-device copy, no sync
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (B, 1, h, w)
    return x


def _stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """aug.mean / aug.std for ``channels`` channels: RGB statistics become their luminance for one channel."""
    if len(values) == channels:
        return tuple(values)
    if channels == 1 and len(values) == 3:
        return (0.299 * values[0] + 0.587 * values[1] + 0.114 * values[2],)
    if channels == 3 and len(values) == 1:
        return tuple(values) * 3
    raise ConfigError(f"mean/std {tuple(values)} do not fit {channels} channel(s)")


def _channel_constant(values, x: torch.Tensor) -> torch.Tensor:
    """Per-channel constants (1, C, 1, 1) on x's device. Built on the host and copied with
    non_blocking=True: torch.tensor(..., device="cuda") is a blocking copy that synchronises the
    stream, once per batch in the training loop."""
    return torch.tensor(values, dtype=x.dtype).view(1, -1, 1, 1).to(x.device, non_blocking=True)


def _finish(x: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """(B, 1|channels, S, S) in [0, 1] -> (B, channels, S, S) normalised with aug.mean / aug.std."""
    if aug.channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grayscale -> 3 channels (a view, no copy): (B, 3, S, S)
    mean, std = _stats(aug.mean, aug.channels), _stats(aug.std, aug.channels)
    if len(set(mean)) == 1 and len(set(std)) == 1:  # the usual case (Google's 0.5): scalars, no tensor to copy
        return (x - mean[0]) / std[0]  # (B, channels, S, S)
    return (x - _channel_constant(mean, x)) / _channel_constant(std, x)  # (B, channels, S, S)


def _size(aug: AugmentConfig) -> tuple[int, int]:
    s = aug.image_size
    return (s, s) if isinstance(s, int) else tuple(s)


def eval_transform(images: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """Resize (bilinear, antialiased when shrinking) and normalise: uint8 (B, 1|3, h, w) -> float
    (B, aug.channels, S, S). The one preprocessing of evaluation, prediction and validation.

    >>> eval_transform(torch.full((1, 1, 48, 48), 255, dtype=torch.uint8), AugmentConfig(32)).unique().tolist()
    [1.0]
    """
    _check_batch(images, aug)
    x = _to_float(images, aug)  # (B, C, h, w), C = 1 for one-channel models
    size = _size(aug)
    if tuple(x.shape[-2:]) != size:
        shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)  # (B, C, S, S)
    return _finish(x, aug)


def crop_flip_rotate_theta(batch: int, height: int, width: int, aug: AugmentConfig,
                           generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, 2, 3) affine matrices for F.affine_grid: a random crop box (area fraction in aug.scale,
    aspect in aug.ratio, inside the image), flipped with probability aug.hflip, rotated by up to
    aug.rotate_deg, mapped onto the whole output. Normalised coords, align_corners=False."""
    u = torch.rand(batch, 6, generator=generator, device=device)  # all the randomness of one batch
    lo, hi = aug.scale
    area = height * width * (lo + (hi - lo) * u[:, 0])
    log_lo, log_hi = math.log(aug.ratio[0]), math.log(aug.ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    # Clamp instead of torchvision's retry loop: a box wider than the image becomes the full width.
    crop_w = torch.sqrt(area * aspect).clamp(max=width)
    crop_h = torch.sqrt(area / aspect).clamp(max=height)
    centre_x = (u[:, 2] - 0.5) * (width - crop_w)  # pixels from the image centre; box stays inside
    centre_y = (u[:, 3] - 0.5) * (height - crop_h)
    flip = torch.where(u[:, 4] < aug.hflip, -1.0, 1.0)
    angle = (2 * u[:, 5] - 1) * math.radians(aug.rotate_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output (a, b) in [-1, 1]^2 -> crop pixels (flip * a * crop_w/2, b * crop_h/2) -> rotate -> + centre
    # -> input normalised coords (divide by width/2, height/2). Rotation in pixel units keeps
    # non-square images from shearing.
    sx, sy = flip * crop_w / 2, crop_h / 2
    theta = torch.stack([
        torch.stack([cos * sx / (width / 2), -sin * sy / (width / 2), centre_x / (width / 2)], -1),
        torch.stack([sin * sx / (height / 2), cos * sy / (height / 2), centre_y / (height / 2)], -1),
    ], 1)  # (B, 2, 3)
    return theta


def train_transform(images: torch.Tensor, aug: AugmentConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crop + flip + rotation + resize (one grid_sample), brightness/contrast jitter,
    random erasing (``aug.erase``), channel conversion, normalisation: uint8 (B, 1|3, h, w) -> float32 (B, aug.channels, S, S), same device.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = train_transform(torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8), AugmentConfig(32), g)
    >>> tuple(x.shape), bool(x.min() >= -1 and x.max() <= 1)
    ((4, 3, 32, 32), True)
    """
    _check_batch(images, aug)
    _check_generator(generator, images.device)
    x = _to_float(images, aug)  # (B, C, H, W), C = 1 for one-channel models
    B, C, H, W = x.shape
    size = _size(aug)
    # grid_sample does not antialias: when the source is much larger than the crops need,
    # shrink it first (antialiased) so the smallest crop still has >= S pixels a side.
    need = math.ceil(max(size) / math.sqrt(aug.scale[0]))
    if min(H, W) > need:
        f = need / min(H, W)
        x = F.interpolate(x, size=(round(H * f), round(W * f)), mode="bilinear", antialias=True,
                          align_corners=False)  # (B, C, h', w')
    theta = crop_flip_rotate_theta(B, H, W, aug, generator, images.device)  # in original pixel geometry
    grid = F.affine_grid(theta, [B, C, *size], align_corners=False)  # (B, S, S, 2)
    # reflection: rotated corners show mirrored face instead of black wedges the model could key on
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)  # (B, C, S, S)

    if aug.brightness or aug.contrast:
        u = torch.rand(B, 2, 1, 1, 1, generator=generator, device=images.device)
        if aug.brightness:
            x = x * (1 + aug.brightness * (2 * u[:, 0] - 1))
        if aug.contrast:
            # contrast about the mean gray level of each image (torchvision's definition)
            # (ITU-R 601 luma weights as Python scalars: no host-to-device copy, no sync)
            gray = x if C == 1 else 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (B, 1, S, S)
            m = gray.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x = (x - m) * (1 + aug.contrast * (2 * u[:, 1] - 1)) + m
        x = x.clamp(0, 1)
    if aug.erase:  # drawn only when on: runs without it keep their random stream
        x = random_erase(x, aug.erase, generator)
    return _finish(x, aug)


# Random erasing's box, as torchvision's RandomErasing: 2-33% of the image, aspect h/w in [0.3, 3.3].
ERASE_AREA = (0.02, 1 / 3)
ERASE_ASPECT = (0.3, 3.3)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` per image, a random box (ERASE_AREA of
    the image, aspect ERASE_ASPECT) is replaced by uniform noise. The model cannot rely on any one part of
    the face (an eye, the mouth): what occlusion by a hand or glasses does in the wild.
    (B, C, S, S) in [0, 1] -> the same shape, every box drawn at once on x's device.

    >>> x = random_erase(torch.zeros(4, 1, 16, 16), 1.0, torch.Generator().manual_seed(0))
    >>> [round(float((img != 0).float().mean()), 2) > 0 for img in x]  # every image got a box
    [True, True, True, True]
    """
    B, C, H, W = x.shape
    u = torch.rand(B, 5, generator=generator, device=x.device)
    area = H * W * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[:, 0])  # (B,) pixels
    log_lo, log_hi = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # (B,) h / w
    h = torch.sqrt(area * aspect).round().clamp(1, H)  # (B,)
    w = torch.sqrt(area / aspect).round().clamp(1, W)
    top = (u[:, 2] * (H - h + 1)).floor()  # (B,) the box stays inside the image
    left = (u[:, 3] * (W - w + 1)).floor()
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    inside = ((rows >= top.view(B, 1, 1)) & (rows < (top + h).view(B, 1, 1))
              & (cols >= left.view(B, 1, 1)) & (cols < (left + w).view(B, 1, 1)))  # (B, H, W)
    box = (inside & (u[:, 4] < p).view(B, 1, 1)).unsqueeze(1)  # (B, 1, H, W), only images drawn to be erased
    noise = torch.rand(x.shape, generator=generator, device=x.device)  # (B, C, H, W) in [0, 1)
    return torch.where(box, noise, x)  # (B, C, H, W)


def one_hot(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices (B,) or soft labels (B, K) -> float (B, K), with label smoothing:
    y * (1 - smoothing) + smoothing / K (rows still sum to 1).

    >>> one_hot(torch.tensor([2]), 4, smoothing=0.2).tolist()
    [[0.05000000074505806, 0.05000000074505806, 0.8500000238418579, 0.05000000074505806]]
    """
    if not 0 <= smoothing < 1:
        raise ConfigError(f"label smoothing={smoothing}: expected 0 <= smoothing < 1")
    if targets.ndim == 1:
        y = F.one_hot(targets.long(), num_classes).float()  # (B, K)
    elif targets.ndim == 2 and targets.shape[1] == num_classes:
        y = targets if targets.is_floating_point() else targets.float()
    else:
        raise ConfigError(f"targets must be (B,) indices or (B, {num_classes}) soft labels, got {tuple(targets.shape)}")
    return y * (1 - smoothing) + smoothing / num_classes if smoothing else y


def _check_host_generator(generator: torch.Generator | None) -> None:
    # CutMix/MixUp draw a few numbers per batch that Python needs (lambda, box corners): drawing
    # them on the host keeps the GPU from having to sync with the CPU at every step.
    if generator is not None and generator.device.type != "cpu":
        raise ConfigError(f"CutMix/MixUp draw their per-batch numbers on the host: pass a CPU generator, "
                          f"not one on {generator.device}")


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> float:
    """One Beta(alpha, alpha) draw, reproducible from the CPU `generator` (torch's Beta sampler
    takes no generator, so a seed is drawn from it for numpy's)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(height: int, width: int, lam: float,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box with area about (1 - lam) of the image, centred uniformly at random
    and clipped to the image (so its real area can be smaller: cutmix recomputes lambda from it)."""
    cut = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = torch.randint(0, 2**31 - 1, (2,), generator=generator).tolist()
    cy, cx = cy % height, cx % width
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def cutmix(x: torch.Tensor, y_soft: torch.Tensor, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019): paste a box from the neighbouring sample (the batch rolled by one,
    so never a sample onto itself when B > 1) and mix labels by the pasted area:
    y = (1 - a) * y + a * y_rolled with a = box_area / image_area exactly (the clipped box).
    One lambda ~ Beta(alpha, alpha) and one box per batch, drawn from the CPU ``generator`` whatever
    the device of ``x``; alpha <= 0 returns the inputs unchanged.

    >>> x, y = cutmix(torch.zeros(2, 3, 8, 8), one_hot(torch.tensor([0, 1]), 2), generator=torch.Generator().manual_seed(0))
    >>> y.sum(1).tolist()
    [1.0, 1.0]
    """
    if alpha <= 0:
        return x, y_soft
    _check_host_generator(generator)
    H, W = x.shape[-2:]
    lam = sample_beta(alpha, generator)
    y0, y1, x0, x1 = cutmix_box(H, W, lam, generator)
    pasted = (y1 - y0) * (x1 - x0) / (H * W)  # area-adjusted: 1 - lambda_adjusted
    x = x.clone()
    x[..., y0:y1, x0:x1] = x.roll(1, 0)[..., y0:y1, x0:x1]  # (B, C, H, W)
    return x, y_soft * (1 - pasted) + y_soft.roll(1, 0) * pasted


def mixup(x: torch.Tensor, y_soft: torch.Tensor, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018): x = lam * x + (1 - lam) * x_rolled, same for labels, one
    lam ~ Beta(alpha, alpha) per batch; alpha <= 0 returns the inputs unchanged."""
    if alpha <= 0:
        return x, y_soft
    _check_host_generator(generator)
    lam = sample_beta(alpha, generator)
    return x * lam + x.roll(1, 0) * (1 - lam), y_soft * lam + y_soft.roll(1, 0) * (1 - lam)


def mix_batch(x: torch.Tensor, y_soft: torch.Tensor, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              switch_prob: float = 0.5, mix_prob: float = 1.0, generator: torch.Generator | None = None):
    """MixUp or CutMix for one batch (timm's Mixup policy): the batch is mixed at all with probability
    ``mix_prob`` (mixing every batch makes a small model underfit: it never sees a clean face); then,
    with both enabled, CutMix with probability switch_prob, else MixUp; with one enabled, that one;
    with neither, unchanged. mix_prob=1 draws nothing for the decision; mix_prob=0 never mixes.

    >>> x, y = torch.rand(4, 1, 8, 8), one_hot(torch.tensor([0, 1, 2, 3]), 4)
    >>> x2, y2 = mix_batch(x, y, cutmix_alpha=1.0, mix_prob=0.0, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(x2, x) and torch.equal(y2, y)
    True
    """
    if not 0 <= mix_prob <= 1:
        raise ConfigError(f"mix_prob={mix_prob}: expected 0 <= mix_prob <= 1")
    if mix_prob == 0 or (mixup_alpha <= 0 and cutmix_alpha <= 0):
        return x, y_soft
    if mix_prob < 1:
        _check_host_generator(generator)
        if float(torch.rand(1, generator=generator)) >= mix_prob:
            return x, y_soft
    if mixup_alpha > 0 and cutmix_alpha > 0:
        _check_host_generator(generator)
        use_cutmix = float(torch.rand(1, generator=generator)) < switch_prob
    else:
        use_cutmix = cutmix_alpha > 0
    if use_cutmix:
        return cutmix(x, y_soft, cutmix_alpha, generator)
    return mixup(x, y_soft, mixup_alpha, generator)
