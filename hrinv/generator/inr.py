"""Style-INR-GAN head: render a StyleGAN2's last feature map at any width x height (our own design).

The paper (HRInversion, Sec. III-A, Fig. 3) appends an INR network to StyleGAN2: grid-sample the synthesis output
features at (x, y), concatenate the coordinates, and map them to RGB with a 3-layer MLP. No code or weights were
released, so everything below the level of that sentence is our own design, documented in docs/generator.md:

* The head samples BOTH the last block's features (bilinear) and the generator's own RGB image (bicubic) at the
  query point, and the MLP predicts a *residual* on that RGB, multiplied by a gate that is 0 at input pixel centres.
  Rendering at the native resolution therefore reproduces the generator exactly (up to float rounding), and the
  MLP only has to learn what happens *between* pixels.
* Coordinates follow ``align_corners=False``: output pixel j of W sits at ``u = (2j + 1) / W - 1``, so the native
  grid hits input pixel centres. The MLP gets the features, the base RGB, the offset to the nearest input pixel
  centre (in input pixels), the cell size (input pixels per output pixel) and the global coordinate (u, v).
* Distillation (:func:`fit_inr_head`) trains the residual as a super-resolver on the generator's own output: the
  trunk's features and image are shrunk by a random factor in [1, max_scale] per axis, and the head must predict
  the native-resolution pixels from them (LIIF-style). At render time it is applied to the full-resolution maps.
* Outputs smaller than native along an axis are rendered from antialiased, resized maps (no aliasing).
"""

import copy
import logging
import math

import torch
import torch.nn.functional as F

from ..errors import IncompatibleGeneratorsError, ShapeError

__all__ = ["INRHead", "fit_inr_head", "pixel_centres", "psnr"]

log = logging.getLogger(__name__)

_NUM_GEOM = 6  # delta_x, delta_y, cell_x, cell_y, u, v


def pixel_centres(n, start=0, stop=None, device=None, dtype=torch.float32):
    """Normalised ``align_corners=False`` centres of pixels ``start..stop-1`` of a row of ``n`` pixels, in (-1, 1)."""
    stop = n if stop is None else stop
    return (2 * torch.arange(start, stop, device=device, dtype=torch.float64) + 1).div(n).sub(1).to(dtype)


def psnr(a, b, peak_to_peak=2.0):
    """PSNR in dB between images in [-1, 1] (peak-to-peak 2), per sample ``[B]``."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1).clamp_min(1e-20)
    return 10 * torch.log10(peak_to_peak ** 2 / mse)


class INRHead(torch.nn.Module):
    """Feature + coordinate MLP that renders a synthesis network's output at any resolution.

    Args:
        in_channels: Channels of the last synthesis block (``G.synthesis.channels[R]``).
        img_resolution: The generator's native resolution R.
        img_channels: Output channels (3).
        hidden: Width of the two hidden MLP layers.
        device, dtype: Of the parameters.

    The MLP has three linear layers (in -> hidden -> hidden -> img_channels) with LeakyReLU(0.2); the last layer starts
    at zero, so an untrained head renders the bicubic-sampled generator image. ``feat_mean``/``feat_std`` buffers
    normalise the sampled features (set by :func:`fit_inr_head`).
    """

    def __init__(self, in_channels, img_resolution, img_channels=3, hidden=64, device=None, dtype=None):
        super().__init__()
        self.in_channels = int(in_channels)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.hidden = int(hidden)
        dd = {"device": device, "dtype": dtype}
        n_in = self.in_channels + self.img_channels + _NUM_GEOM
        self.fc0 = torch.nn.Linear(n_in, self.hidden, **dd)
        self.fc1 = torch.nn.Linear(self.hidden, self.hidden, **dd)
        self.fc2 = torch.nn.Linear(self.hidden, self.img_channels, **dd)
        self.register_buffer("feat_mean", torch.zeros(self.in_channels, **dd))
        self.register_buffer("feat_std", torch.ones(self.in_channels, **dd))
        self.fit_info = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Re-initialise the MLP from ``generator`` (default: a fresh one seeded 0; the global RNG is never used).

        Hidden layers get a uniform +-1/sqrt(fan_in) init; the output layer is zero, so the residual starts at 0.
        """
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        for fc in (self.fc0, self.fc1):
            bound = 1 / math.sqrt(fc.in_features)
            for p in (fc.weight, fc.bias):
                r = torch.rand(p.shape, generator=generator, device=generator.device, dtype=torch.float32)
                p.copy_(((2 * r - 1) * bound).to(p))
        self.fc2.weight.zero_()
        self.fc2.bias.zero_()

    # -- (de)serialisation ---------------------------------------------------------------------------------------------
    @property
    def config(self):
        """JSON-able description; ``INRHead.from_config(head.config)`` rebuilds the same architecture."""
        return {"type": "hrinv.inr_head", "version": 1, "in_channels": self.in_channels,
                "img_resolution": self.img_resolution, "img_channels": self.img_channels, "hidden": self.hidden,
                "fit_info": copy.deepcopy(self.fit_info)}

    @classmethod
    def from_config(cls, config, device=None, dtype=None):
        """Build an (untrained) head from :attr:`config`; load its ``inr.*`` weights afterwards."""
        if not isinstance(config, dict) or config.get("type", "hrinv.inr_head") != "hrinv.inr_head":
            raise ShapeError(f"INRHead.from_config: expected a dict with type 'hrinv.inr_head', got {config!r:.200}.")
        if int(config.get("version", 1)) != 1:
            raise ShapeError(f"INRHead.from_config: unsupported head version {config.get('version')}; this hrinv "
                             f"understands version 1. Refit the head with `hrinv fit-inr`.")
        try:
            head = cls(config["in_channels"], config["img_resolution"], config.get("img_channels", 3),
                       config.get("hidden", 64), device=device, dtype=dtype)
        except KeyError as e:
            raise ShapeError(f"INRHead.from_config: config lacks {e}; got keys {sorted(config)}.") from None
        head.fit_info = copy.deepcopy(config.get("fit_info") or {})
        return head

    def check_compatible(self, G):
        """Raise :class:`IncompatibleGeneratorsError` unless this head fits generator ``G``."""
        R = G.img_resolution
        want = (G.synthesis.channels[R], R, G.img_channels)
        got = (self.in_channels, self.img_resolution, self.img_channels)
        if want != got:
            raise IncompatibleGeneratorsError(
                f"INR head (in_channels, img_resolution, img_channels) = {got} does not fit this generator, which "
                f"needs {want}. Fit a head for this generator with hrinv.fit_inr_head(G) / `hrinv fit-inr`.")

    # -- rendering -----------------------------------------------------------------------------------------------------
    def _dtype(self, t):
        return torch.promote_types(t.dtype, self.fc0.weight.dtype)

    def project(self, x):
        """First MLP layer's feature part, applied at the map's own resolution: ``[B, C, h, w] -> [B, hidden, h, w]``.

        Bilinear sampling with border padding is a convex combination of 4 taps, so projecting before sampling equals
        projecting after it; doing it first makes the per-output-pixel cost and memory scale with ``hidden``, not C.
        The feature normalisation (``feat_mean``, ``feat_std``) and the first bias are folded in here.
        """
        dtype = self._dtype(x)
        w0 = self.fc0.weight.to(dtype)[:, :self.in_channels] / self.feat_std.to(dtype)  # [hidden, C]
        b0 = self.fc0.bias.to(dtype) - w0 @ self.feat_mean.to(dtype)  # [hidden]
        return F.conv2d(x.to(dtype), w0[:, :, None, None], b0)  # [B, hidden, h, w]

    def prepare(self, x, img, shape):
        """The maps :meth:`render_region` samples for an output of ``shape = (H, W)``: ``(projected features, rgb)``.

        Along an axis where the output is smaller than the native map, features and image are first resized with an
        antialiased filter to the output size (so downscaled renders do not alias).
        """
        H, W = _check_shape(shape)
        if x.ndim != 4 or x.shape[1] != self.in_channels or img.ndim != 4 or img.shape[1] != self.img_channels:
            raise ShapeError(f"INRHead: expected features [B, {self.in_channels}, R, R] and image "
                             f"[B, {self.img_channels}, R, R], got {tuple(x.shape)} and {tuple(img.shape)}.")
        h, w = min(H, x.shape[2]), min(W, x.shape[3])
        if (h, w) != tuple(x.shape[2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            img = F.interpolate(img, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return self.project(x), img.to(self._dtype(img))

    def query(self, proj, rgb, v, u, cell):
        """Evaluate the head on the outer-product grid of row coordinates ``v [h]`` and column coordinates ``u [w]``.

        Args:
            proj: ``[B, hidden, Hin, Win]`` from :meth:`project`. rgb: ``[B, 3, Hin, Win]`` image.
            v, u: Normalised coordinates in (-1, 1) (``align_corners=False`` convention).
            cell: ``(cell_y, cell_x)``: input pixels per output pixel.

        Returns:
            ``[B, 3, h, w]``.
        """
        B, _, hin, win = proj.shape
        dtype = proj.dtype
        rgb = rgb.to(dtype)
        v = v.to(device=proj.device, dtype=dtype)
        u = u.to(device=proj.device, dtype=dtype)
        gy, gx = torch.meshgrid(v, u, indexing="ij")  # [h, w]
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(B, -1, -1, -1)  # [B, h, w, 2]
        hdn = F.grid_sample(proj, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [B, hid, h, w]
        base = F.grid_sample(rgb, grid, mode="bicubic", padding_mode="border", align_corners=False)  # [B, 3, h, w]
        py, px = ((v + 1) * hin - 1) / 2, ((u + 1) * win - 1) / 2  # input pixel units
        dy = py - py.round().clamp(0, hin - 1)  # [h]
        dx = px - px.round().clamp(0, win - 1)  # [w]
        dy2, dx2 = torch.meshgrid(dy, dx, indexing="ij")  # [h, w]
        gate = (torch.sin(math.pi * dy2).square() + torch.sin(math.pi * dx2).square()).sqrt()  # [h, w], 0 at centres
        geom = torch.stack([dx2, dy2, torch.full_like(dx2, float(cell[1])), torch.full_like(dx2, float(cell[0])),
                            gx, gy], dim=0)  # [6, h, w]
        # The rest of the MLP runs as 1x1 convolutions on channel-first maps; the coordinate part is batch-independent.
        C, K = self.in_channels, self.img_channels
        w0 = self.fc0.weight.to(dtype)  # [hidden, C + 3 + 6]
        hdn = hdn + F.conv2d(base, w0[:, C:C + K, None, None])
        hdn = hdn + torch.einsum("kg,ghw->khw", w0[:, C + K:], geom).unsqueeze(0)
        hdn = F.leaky_relu(hdn, 0.2)
        hdn = F.leaky_relu(F.conv2d(hdn, self.fc1.weight.to(dtype)[:, :, None, None], self.fc1.bias.to(dtype)), 0.2)
        res = F.conv2d(hdn, self.fc2.weight.to(dtype)[:, :, None, None], self.fc2.bias.to(dtype))  # [B, 3, h, w]
        return base + res * gate.to(dtype)

    def render_region(self, proj, rgb, shape, rows, cols):
        """Render rows ``rows = (y0, y1)`` and columns ``cols = (x0, x1)`` of a ``shape = (H, W)`` output from the maps
        returned by :meth:`prepare`. Returns ``[B, 3, y1 - y0, x1 - x0]``."""
        H, W = _check_shape(shape)
        v = pixel_centres(H, rows[0], rows[1], device=proj.device)
        u = pixel_centres(W, cols[0], cols[1], device=proj.device)
        return self.query(proj, rgb, v, u, (proj.shape[2] / H, proj.shape[3] / W))

    def forward(self, x, img, shape, tile=None):
        """Render the whole ``shape = (H, W)`` output from features ``x [B, C, R, R]`` and image ``img [B, 3, R, R]``.

        Args:
            tile: ``None`` renders in one piece. An integer renders ``tile x tile`` pieces; when gradients are
                recorded each piece is checkpointed (``torch.utils.checkpoint``, recomputed in backward), so the
                head's ``hidden``-channel activations exist for one piece at a time instead of the whole image
                (at 64 hidden channels about 1.6 KB per output pixel in fp32). Same values and gradients.

        Returns:
            ``[B, 3, H, W]``, about [-1, 1]; equal to ``img`` (up to float rounding) when ``shape == (R, R)``.
        """
        H, W = _check_shape(shape)
        proj, rgb = self.prepare(x, img, (H, W))
        if tile is None or (int(tile) >= H and int(tile) >= W):
            return self.render_region(proj, rgb, (H, W), (0, H), (0, W))
        tile = int(tile)
        if tile < 1:
            raise ShapeError(f"INRHead: tile must be None or >= 1, got {tile}.")
        from torch.utils.checkpoint import checkpoint

        grad = torch.is_grad_enabled() and (proj.requires_grad or rgb.requires_grad)
        rows = []
        for y0 in range(0, H, tile):
            row = []
            for x0 in range(0, W, tile):
                region = ((y0, min(y0 + tile, H)), (x0, min(x0 + tile, W)))
                if grad:
                    row.append(checkpoint(self.render_region, proj, rgb, (H, W), *region, use_reentrant=False))
                else:
                    row.append(self.render_region(proj, rgb, (H, W), *region))
            rows.append(torch.cat(row, dim=3) if len(row) > 1 else row[0])
        return torch.cat(rows, dim=2) if len(rows) > 1 else rows[0]  # [B, 3, H, W]

    def extra_repr(self):
        return f"in_channels={self.in_channels}, img_resolution={self.img_resolution}, hidden={self.hidden}"


def _check_shape(shape):
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"shape must be (height, width), got {shape!r}.") from None
    if H < 1 or W < 1:
        raise ShapeError(f"shape must be positive (height, width), got {shape!r}.")
    return H, W


# ----------------------------------------------------------------------------------------------------------------------
# Distillation


def _sample_batch(G, batch, generator, device, psi):
    z = torch.randn(batch, G.z_dim, generator=generator, device=generator.device).to(device)
    c = None
    if G.c_dim > 0:
        idx = torch.randint(G.c_dim, (batch,), generator=generator, device=generator.device).to(device)
        c = F.one_hot(idx, G.c_dim).to(torch.float32)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=psi)
        mode = "const" if torch.rand((), generator=generator, device=generator.device) < 0.5 else "random"
        x, img = G.synthesis.forward_features(ws, noise_mode=mode, generator=generator)
    return x.float(), img.float()


def _shrink(x, img, generator, max_scale):
    """Resize both maps by independent random factors in [1, max_scale] per axis (antialiased)."""
    R = x.shape[-1]
    lo = math.log(1.0)
    hi = math.log(max_scale)
    sy, sx = (math.exp(lo + (hi - lo) * float(torch.rand((), generator=generator, device=generator.device)))
              for _ in range(2))
    h, w = max(2, round(R / sy)), max(2, round(R / sx))
    xs = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    imgs = F.interpolate(img, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return xs, imgs


def _eval_head(head, G, generator, device, psi, batch=4):
    """Native-resolution PSNR of the head, and 2x-super-resolution PSNR of head vs plain bicubic (held-out z)."""
    x, img = _sample_batch(G, batch, generator, device, psi)
    R = img.shape[-1]
    with torch.no_grad():
        native = psnr(head(x, img, (R, R)), img).mean().item()
        h = max(2, R // 2)
        xs = F.interpolate(x, size=(h, h), mode="bilinear", align_corners=False, antialias=True)
        imgs = F.interpolate(img, size=(h, h), mode="bicubic", align_corners=False, antialias=True)
        sr = head.render_region(head.project(xs), imgs, (R, R), (0, R), (0, R))
        bic = F.interpolate(imgs, size=(R, R), mode="bicubic", align_corners=False)
    return {"psnr_native_db": native, "psnr_2x_head_db": psnr(sr, img).mean().item(),
            "psnr_2x_bicubic_db": psnr(bic, img).mean().item()}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _HeadQuery(torch.nn.Module):
    """The head's training query as a module ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, xs, imgs, v, u, cell):
        return self.head.query(self.head.project(xs), imgs, v, u, cell)


def fit_inr_head(G, steps=500, batch=8, lr=2e-3, *, generator=None, device=None, callback=None, hidden=64,
                 points=4096, max_scale=4.0, truncation_psi=1.0, reuse=4, preview_every=0):
    """Distil an :class:`INRHead` for ``G`` from its own output and return a NEW generator carrying it.

    Each step draws ``batch`` random z (half with const, half with random noise), runs the trunk, shrinks features and
    image by a random factor in [1, ``max_scale``] per axis, and trains the residual MLP to predict ``points`` random
    native-resolution pixels per image (L1 + L2 loss, Adam with cosine decay). At the native resolution the head is
    exact by construction; the fit teaches it how to fill in between pixels.

    Args:
        G: The generator (not modified).
        steps, batch, lr: Optimisation length, samples per step, Adam learning rate.
        generator: ``torch.Generator`` for every random draw (default: seeded with 0, reproducible).
        device: Where to fit (default: G's device).
        callback: ``callback(step, total, preview)``; ``preview`` is ``None`` or ``[1, 3, R, 2R]`` (a 2x-wide render).
            Raising from it cancels the fit (G stays untouched).
        hidden: MLP width. points: Pixels sampled per image per step. max_scale: Largest training shrink factor.
        truncation_psi: Truncation of the sampled z.
        reuse: Each trunk batch serves this many consecutive steps (each with new shrink factors and pixels); the
            trunk dominates the cost, so this makes the fit several times faster at little loss.
        preview_every: Steps between previews (0 = none).

    Under ``torchrun`` (an initialised ``torch.distributed`` process group of several ranks) the head is trained with
    DistributedDataParallel: the same start on every rank, each rank its own samples (so a step sees ``batch x
    ranks`` samples), averaged gradients; every rank returns the same head. Otherwise nothing changes.

    Returns:
        A deep copy of ``G`` (same device/dtype as ``G``) with ``.inr`` set; ``G.inr.fit_info`` holds the final loss and
        held-out PSNRs (native, and 2x super-resolution head vs bicubic).
    """
    if steps < 0 or batch < 1 or points < 1 or max_scale < 1 or reuse < 1:
        raise ShapeError(f"fit_inr_head: need steps >= 0, batch >= 1, points >= 1, max_scale >= 1, reuse >= 1; got "
                         f"steps={steps}, batch={batch}, points={points}, max_scale={max_scale}, reuse={reuse}.")
    param = next(G.parameters())
    device = torch.device(device) if device is not None else param.device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    G_fit = copy.deepcopy(G).to(device).eval().requires_grad_(False)
    G_fit.inr = None
    R = G.img_resolution
    head = INRHead(G.synthesis.channels[R], R, G.img_channels, hidden=hidden, device=device)
    head.reset_parameters(generator)

    # Feature normalisation from a first batch.
    x0, _ = _sample_batch(G_fit, max(batch, 4), generator, device, truncation_psi)
    head.feat_mean.copy_(x0.mean(dim=(0, 2, 3)))
    head.feat_std.copy_(x0.std(dim=(0, 2, 3)).clamp_min(1e-3))

    # Under torchrun (a process group of several ranks): DistributedDataParallel over the head, each rank drawing its
    # own samples (global batch = batch x ranks); gradients are averaged, so every rank holds the same head.
    model, data_gen = None, generator
    if _distributed():
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        data_gen = torch.Generator(device=generator.device).manual_seed(base + 7919 * dist.get_rank())
        model = DistributedDataParallel(_HeadQuery(head), device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps,
                                                                                                              1))))
    loss_v = float("nan")
    for step in range(steps):
        if step % reuse == 0:
            x, img = _sample_batch(G_fit, batch, data_gen, device, truncation_psi)
        xs, imgs = _shrink(x, img, data_gen, max_scale)
        # random native pixels: a random sub-grid of rows x cols keeps the outer-product query layout
        n = max(1, min(R, int(math.sqrt(points))))
        rows = torch.randperm(R, generator=data_gen, device=data_gen.device)[:n].sort().values.to(device)
        cols = torch.randperm(R, generator=data_gen, device=data_gen.device)[:n].sort().values.to(device)
        v, u = (2 * rows.float() + 1) / R - 1, (2 * cols.float() + 1) / R - 1
        cell = (xs.shape[2] / R, xs.shape[3] / R)
        if model is None:
            pred = head.query(head.project(xs), imgs, v, u, cell)  # [B, 3, n, n]
        else:
            pred = model(xs, imgs, v, u, cell)
        target = img[:, :, rows][:, :, :, cols]  # [B, 3, n, n]
        loss = (pred - target).abs().mean() + (pred - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_v = loss.item()
        if callback is not None:
            preview = None
            if preview_every and (step + 1) % preview_every == 0:
                with torch.no_grad():
                    preview = head(x[:1], img[:1], (R, 2 * R)).detach().cpu()
            callback(step + 1, steps, preview)

    head.eval().requires_grad_(False)
    info = _eval_head(head, G_fit, data_gen, device, truncation_psi)
    if model is not None:
        import torch.distributed as dist

        info["ranks"] = dist.get_world_size()
    info.update({"steps": int(steps), "batch": int(batch), "lr": float(lr), "points": int(points),
                 "max_scale": float(max_scale), "reuse": int(reuse), "final_loss": loss_v})
    head.fit_info = info
    log.info("INR head fitted: native %.1f dB; 2x SR head %.2f dB vs bicubic %.2f dB", info["psnr_native_db"],
             info["psnr_2x_head_db"], info["psnr_2x_bicubic_db"])
    G_out = copy.deepcopy(G)
    G_out.attach_inr(head.to(device=param.device, dtype=param.dtype))
    return G_out
