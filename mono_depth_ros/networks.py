"""The coarse -> fine depth cascade of Eigen, Puhrsch & Fergus (2014), with a modern encoder.

* ``CoarseNet`` predicts global layout: an EfficientNet-Lite encoder (Lite0, 1 or 2; ImageNet
  weights at training time), a global-context branch so that every output pixel sees the whole
  image, and a small U-Net decoder. It outputs log depth at 1/``coarse_scale`` of the input
  resolution: 4 decodes through every encoder skip; 16 stops at 1/16, global layout only, as
  Eigen's coarse net did.
* ``FineNet`` refines locally at 1/``fine_scale`` of the input resolution (Eigen's fine scale works
  at 1/4): strided layers on RGB, then the coarse log depth is concatenated as an extra feature map
  (as in Eigen's paper), then a few 3x3 convolutions that predict a residual to the coarse log
  depth. With ``fine_skips`` it also reads the frozen coarse encoder's features at the scales
  between the two (1/8 and 1/4 for a 1/16 coarse net) through a small decoder that starts from
  the coarse depth, so the detail the coarse net leaves out is the fine stage's job. Its output
  is enlarged bilinearly to the input size (no transposed convolutions, so no checkerboard
  patterns). With ``confidence`` on, a small head beside it predicts log b, the
  Laplace scale of the fine log-depth error, from detached features (it never changes the depth);
  ``confidence_from_log_b`` turns b into P(|log(pred/gt)| < log 1.25), the delta < 1.25 test.

Both take an RGB image in [0, 1]; ImageNet normalisation happens inside the graph so that every
backend (PyTorch, ONNX Runtime, TensorRT) shares one preprocessing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Laplace scale b of the fine log-depth error: the head starts at b = 0.2 and stays in this range.
LOG_B_INIT = math.log(0.2)
LOG_B_RANGE = (math.log(0.01), math.log(5.0))
DELTA1_LOG = math.log(1.25)

# EfficientNet-Lite stages: (repeats, kernel, stride, expand, in, out). No squeeze-excite, ReLU6.
# Lite1 and Lite2 scale depth (and Lite2 width) but keep the stem, as the ImageNet files show.
_LITE_STAGES = {
    "lite0": ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
              (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320)),
    "lite1": ((1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 40),
              (4, 3, 2, 6, 40, 80), (4, 5, 1, 6, 80, 112), (5, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320)),
    "lite2": ((1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 48),
              (4, 3, 2, 6, 48, 88), (4, 5, 1, 6, 88, 120), (5, 5, 2, 6, 120, 208),
              (1, 3, 1, 6, 208, 352)),
}
ENCODERS = tuple(_LITE_STAGES)
# The encoder stages whose last block gives the 1/4, 1/8, 1/16 and 1/32 features.
_SKIP_STAGES = (1, 2, 4, 6)
_SKIP_SCALES = (4, 8, 16, 32)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def skip_channels(encoder: str) -> tuple[int, ...]:
    """Channels of the encoder's features at 1/4, 1/8, 1/16 and 1/32."""
    stages = _LITE_STAGES[encoder]
    return tuple(stages[i][5] for i in _SKIP_STAGES)


def _skip_blocks(encoder: str) -> tuple[int, ...]:
    """Index of the last block of each skip stage."""
    ends, n = [], 0
    for repeats, *_ in _LITE_STAGES[encoder]:
        n += repeats
        ends.append(n - 1)
    return tuple(ends[i] for i in _SKIP_STAGES)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck block; attribute names match the ImageNet state dict."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class LiteEncoder(nn.Module):
    """EfficientNet-Lite0/1/2 feature extractor returning the 1/4, 1/8, 1/16 and 1/32 features."""

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        if variant not in _LITE_STAGES:
            raise ValueError(f"unknown encoder {variant!r}; choose one of {', '.join(ENCODERS)}")
        self.variant = variant
        self.skip_blocks = _skip_blocks(variant)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        blocks = []
        for repeats, k, s, e, cin, cout in _LITE_STAGES[variant]:
            for i in range(repeats):
                blocks.append(_MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.skip_blocks:
                feats.append(x)
        return feats

    def load_imagenet(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the matching EfficientNet-Lite ImageNet state dict (classifier head keys are
        ignored; a file of another variant fails on its shapes)."""
        own = self.state_dict()
        wanted = {k: v for k, v in state_dict.items() if k in own}
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise ValueError(f"ImageNet weights lack {len(missing)} encoder keys, "
                             f"e.g. {missing[0]} (is it EfficientNet-{self.variant.title()}?)")
        wrong = [k for k, v in wanted.items() if v.shape != own[k].shape]
        if wrong:
            raise ValueError(f"ImageNet weights do not fit EfficientNet-{self.variant.title()}: "
                             f"{wrong[0]} is {tuple(wanted[wrong[0]].shape)}, not "
                             f"{tuple(own[wrong[0]].shape)}")
        self.load_state_dict(wanted, strict=True)


def _conv_relu(cin: int, cout: int, k: int = 3, stride: int = 1,
               dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2),
                                   dilation=dilation), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CoarseNet(nn.Module):
    """Global-layout network: image in [0,1] (Bx3xHxW) -> log depth at 1/coarse_scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.decoder_channels
        self.log_min = math.log(cfg.min_depth)
        self.log_max = math.log(cfg.max_depth)
        self.normalize = _Normalize()
        self.encoder = LiteEncoder(cfg.encoder)
        skips = skip_channels(cfg.encoder)
        # Global context: the image-wide mean feature is added back everywhere, so the receptive
        # field of every output pixel is the whole image (Eigen's fully connected layers did this).
        self.context = nn.Sequential(nn.Conv2d(skips[-1], c, 1), nn.ReLU(inplace=True))
        rows = 1 if cfg.row_channel else 0
        self.row_channel = cfg.row_channel
        self.reduce = _conv_relu(skips[-1] + rows, c, 1)
        # one decoder stage per encoder scale from 1/16 down to 1/coarse_scale
        n_up = _SKIP_SCALES.index(32) - _SKIP_SCALES.index(cfg.coarse_scale)
        self.up = nn.ModuleList(_conv_relu(c + skip + rows, c)
                                for skip in skips[-2::-1][:n_up])
        self.upsample = cfg.upsample
        self.head = nn.Conv2d(c, 1, 3, padding=1)
        self.use_prior = cfg.layout_prior
        if self.use_prior:
            # Learned log depth of each output row; the image-dependent head adds a residual and
            # starts at zero, so training starts from the prior and can only add what it sees.
            mid = 0.5 * (self.log_min + self.log_max)
            self.prior = nn.Parameter(torch.full((1, 1, cfg.height // cfg.coarse_scale, 1), mid))
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def set_prior(self, row_depths: list[float]) -> None:
        """Initialise the layout prior from per-row median depths (metres, any row count)."""
        d = torch.tensor(row_depths, dtype=torch.float32).clamp(math.exp(self.log_min),
                                                                math.exp(self.log_max))
        rows = F.interpolate(torch.log(d).view(1, 1, -1, 1), size=self.prior.shape[-2:],
                             mode="bilinear", align_corners=False)
        with torch.no_grad():
            self.prior.copy_(rows)

    def _with_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the row coordinate (-1 top .. +1 bottom) appended when ``row_channel``."""
        if not self.row_channel:
            return x
        b, _, h, w = x.shape
        rows = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        return torch.cat([x, rows.view(1, 1, h, 1).expand(b, 1, h, w)], dim=1)

    def forward(self, image: torch.Tensor, features: bool = False):
        """Log depth at 1/coarse_scale; with ``features`` also the encoder's features at
        1/4, 1/8, 1/16 and 1/32 (what a fine net with ``fine_skips`` reads)."""
        feats = self.encoder(self.normalize(image))
        out = self._decode(feats)
        return (out, feats) if features else out

    def _decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        ctx = self.context(x.mean(dim=(2, 3), keepdim=True))
        x = self.reduce(self._with_rows(x)) + ctx
        for conv, skip in zip(self.up, feats[-2::-1]):
            x = _resize(x, skip.shape[-2:], self.upsample)
            x = conv(self._with_rows(torch.cat([x, skip], dim=1)))
        out = self.head(x)
        if not self.use_prior:
            return self.log_min + torch.sigmoid(out) * (self.log_max - self.log_min)
        prior = self.prior
        if prior.shape[-2] != out.shape[-2]:  # another input size than the one trained
            prior = F.interpolate(prior, size=(out.shape[-2], 1), mode="bilinear",
                                  align_corners=False)
        return torch.clamp(prior + out, self.log_min, self.log_max)


class FineNet(nn.Module):
    """Local refinement: (image, coarse log depth at 1/scale) -> refined log depth at 1/scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.fine_channels
        self.scale = cfg.fine_scale
        self.log_min = math.log(cfg.min_depth)
        self.log_max = math.log(cfg.max_depth)
        self.log_mid = 0.5 * (self.log_min + self.log_max)
        self.normalize = _Normalize()
        if self.scale == 1:  # the original full-resolution layout (checkpoints before fine_scale)
            self.rgb = _conv_relu(3, c - 1, 5)
        else:  # a 5x5 stride-2 layer, a 3x3 stride-2 layer per further halving, then a 3x3 layer
            steps = [_conv_relu(3, 16, 5, 2)] + [_conv_relu(16, 16, 3, 2)
                                                 for _ in range(self.scale.bit_length() - 2)]
            self.rgb = nn.Sequential(*steps, _conv_relu(16, c - 1))
        # With fine_skips: a small U-Net decoder from the coarse depth up, one stage per encoder
        # scale between coarse_scale and fine_scale (each sees that scale's frozen encoder
        # features and the coarse log depth), fused with the RGB features at the working size.
        channels = dict(zip(_SKIP_SCALES, skip_channels(cfg.encoder)))
        self.skip_scales = [sc for sc in _SKIP_SCALES[-2::-1]
                            if cfg.fine_skips and self.scale <= sc < cfg.coarse_scale]
        # decoder stages above the working size; the working size's own features join the fuse
        self.decoder_scales = [sc for sc in self.skip_scales if sc != self.scale]
        self.skips = None
        self.fuse = None
        if self.skip_scales:
            self.skips = nn.ModuleList(
                _conv_relu((c if i else 0) + channels[sc] + 1, c)
                for i, sc in enumerate(self.decoder_scales))
            own = channels[self.scale] if self.scale in self.skip_scales else 0
            self.fuse = _conv_relu(c + (c if self.decoder_scales else 0) + own, c)
        # body layer i is dilated by fine_dilation ** (i + 1): with 2, a wider view at no cost
        self.body = nn.Sequential(*[_conv_relu(c, c, dilation=cfg.fine_dilation ** (i + 1))
                                    for i in range(cfg.fine_layers - 2)])
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as the identity: fine == coarse before training
        nn.init.zeros_(self.out.bias)
        self.confidence = None
        if cfg.confidence:  # log b from detached (body features, fine log depth)
            self.confidence = nn.Sequential(nn.Conv2d(c + 1, 16, 3, padding=1),
                                            nn.ReLU(inplace=True), nn.Conv2d(16, 1, 3, padding=1))
            nn.init.zeros_(self.confidence[2].weight)  # b = 0.2 everywhere before training
            nn.init.constant_(self.confidence[2].bias, LOG_B_INIT)

    def forward(self, image: torch.Tensor, coarse_log: torch.Tensor, with_scale: bool = False,
                skips: list[torch.Tensor] | None = None):
        """``coarse_log`` is at this net's working size (input size / ``scale``); ``skips`` are
        the coarse encoder's features (``CoarseNet(..., features=True)``), needed with
        ``fine_skips``. Returns the fine log depth, or with ``with_scale`` (fine log depth,
        log b or None without a head). log b sees only detached tensors: its loss cannot reach
        the depth layers."""
        x = torch.cat([self.rgb(self.normalize(image)), coarse_log - self.log_mid], dim=1)
        if self.fuse is not None:
            x = self._with_skips(x, coarse_log, skips)
        feats = self.body(x)
        fine = torch.clamp(coarse_log + self.out(feats), self.log_min, self.log_max)
        if not with_scale:
            return fine
        if self.confidence is None:
            return fine, None
        log_b = self.confidence(torch.cat([feats.detach(), fine.detach() - self.log_mid], dim=1))
        return fine, torch.clamp(log_b, *LOG_B_RANGE)

    def _with_skips(self, x: torch.Tensor, coarse_log: torch.Tensor,
                    skips: list[torch.Tensor] | None) -> torch.Tensor:
        """The decoder from the coarsest skip scale to the working size, fused with ``x``."""
        if skips is None:
            raise ValueError("this fine net reads the coarse encoder's features (fine_skips): "
                             "pass skips=CoarseNet(image, features=True)[1]")
        y = None
        for sc, stage in zip(self.decoder_scales, self.skips):
            feat = skips[_SKIP_SCALES.index(sc)]
            parts = [feat, _resize(coarse_log, feat.shape[-2:]) - self.log_mid]
            y = stage(torch.cat(parts if y is None else [_resize(y, feat.shape[-2:])] + parts,
                                dim=1))
        parts = [x]
        if y is not None:
            parts.append(_resize(y, x.shape[-2:]))
        if self.scale in self.skip_scales:
            parts.append(skips[_SKIP_SCALES.index(self.scale)])
        return self.fuse(torch.cat(parts, dim=1))


class _Binomial3(nn.Module):
    """Fixed [1 2 1]^T [1 2 1] / 16 low-pass with edge replication (one channel, no weights)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # edge replication by concatenation (plain Slice/Concat in ONNX, no Pad op for TensorRT)
        x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
        x = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
        return F.conv2d(x, self.kernel)


def confidence_from_log_b(log_b: torch.Tensor) -> torch.Tensor:
    """P(|log(pred/gt)| < log 1.25) under a Laplace(0, b) log-depth error: 1 - exp(-log1.25/b).

    Written with Exp/Mul/Sub only (no Neg), so the exported graph keeps TensorRT's op set."""
    inv_b = torch.exp(log_b * -1.0)
    return 1.0 - torch.exp(inv_b * -DELTA1_LOG)


class DepthCascade(nn.Module):
    """Coarse then fine. ``forward`` returns (fine, coarse) depth in metres at input resolution;
    ``predict`` adds the confidence (None without a head)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.coarse = CoarseNet(cfg)
        self.fine = FineNet(cfg)
        self.smooth = _Binomial3() if cfg.output_smoothing else nn.Identity()

    def coarse_pass(self, image: torch.Tensor):
        """(coarse log depth at 1/coarse_scale, the encoder features the fine net reads or
        None)."""
        if not self.fine.skip_scales:
            return self.coarse(image), None
        return self.coarse(image, features=True)

    def fine_input(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The coarse log depth resized to the fine net's working size."""
        s = self.cfg.fine_scale
        return _resize(coarse, (image.shape[-2] // s, image.shape[-1] // s))

    @property
    def has_confidence(self) -> bool:
        return self.fine.confidence is not None

    def forward_log_scale(self, image: torch.Tensor):
        """(fine log depth, coarse log depth, log b or None), each Bx1xHxW at the input
        resolution; log b is smoothed and enlarged like the fine log depth."""
        coarse, skips = self.coarse_pass(image)
        fine, log_b = self.fine(image, self.fine_input(image, coarse), with_scale=True,
                                skips=skips)
        size = image.shape[-2:]
        if log_b is not None:
            log_b = _resize(self.smooth(log_b), size)
        return _resize(self.smooth(fine), size), _resize(self.smooth(coarse), size), log_b

    def forward_log(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fine log depth, coarse log depth), both Bx1xHxW at the input resolution."""
        coarse, skips = self.coarse_pass(image)
        fine = self.fine(image, self.fine_input(image, coarse), skips=skips)
        size = image.shape[-2:]
        return _resize(self.smooth(fine), size), _resize(self.smooth(coarse), size)

    def predict(self, image: torch.Tensor):
        """(fine depth m, coarse depth m, confidence in [0, 1] or None) at input resolution."""
        fine_log, coarse_log, log_b = self.forward_log_scale(image)
        conf = confidence_from_log_b(log_b) if log_b is not None else None
        return torch.exp(fine_log), torch.exp(coarse_log), conf

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine_log, coarse_log = self.forward_log(image)
        return torch.exp(fine_log), torch.exp(coarse_log)


def count_flops(model: nn.Module, height: int, width: int) -> float:
    """FLOPs of one pass of what the exported graph computes (``predict``: depth, coarse depth
    and the confidence where the model has the head; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, height, width)
    run = getattr(model, "predict", model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()
        run(x)
    return float(counter.get_total_flops())
