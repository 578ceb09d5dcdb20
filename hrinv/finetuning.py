"""Few-shot fine-tuning: a target generator G_t from 1-10 style images (JoJoGAN's recipe, our perceptual loss).

``finetune(G_s, style_images, loss, config) -> G_t``:

1. every reference is inverted into G_s's W+ (Eq. 5: W+ only, noise at G_s's constants) with :func:`hrinv.invert`;
2. each training step draws a batch of references and, for each, a random mapped code ``G_s.mapping(z)``; on the
   *mixed* W+ rows the reference's code is replaced by the random one (``alpha`` = how far, 1 = entirely), so the
   batch is a family of plausible faces that share the reference's coarse structure;
3. the synthesis weights of a private copy of G_s (all blocks by default) are trained with Adam so that every one of
   those codes renders the reference itself under the perceptual loss (+ an optional pixel MSE).

G_t therefore learns "whatever these rows say, draw it in the reference's style". With ``preserve_color`` fewer rows
are mixed: the rows that set colour keep the reference's values during training, so G_t does not learn to ignore
them and a face keeps its own colours. The mapping network is never trained (the training codes are W+; it only
samples them), so G_t keeps G_s's mapping, ``w_avg`` and architecture and :func:`hrinv.lerp_generators` accepts the
pair. ``G_t.meta["parent_fingerprint"]`` is ``G_s.fingerprint()``. See docs/finetune.md for the defaults and why.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .bufferpool import BufferPool
from .errors import InvalidSettingError, ShapeError
from .optim import grad_context, settings_dict

__all__ = ["FinetuneConfig", "finetune", "mixed_rows", "tuned_parameter_names"]

log = logging.getLogger(__name__)

# JoJoGAN's layout for an 18-row (1024 px) generator: rows 7..17 are mixed; with preserve-colour only these.
_JOJO_NUM_WS = 18
_JOJO_FIRST_MIXED = 7
_JOJO_PRESERVE_COLOR = (9, 11, 15, 16, 17)


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune`. See docs/finetune.md for what each one trades.

    Attributes:
        steps: fine-tuning steps (JoJoGAN: 200-500; 300 here).
        lr: Adam learning rate of the synthesis weights (JoJoGAN 2e-3, constant).
        betas: Adam betas (JoJoGAN (0, 0.99): no momentum, so a step follows the current batch only).
        batch_size: training codes per step; references are drawn round-robin (each reference equally often).
        mix_rows: W+ rows where the reference's code is mixed with a random mapped code. ``"auto"``: JoJoGAN's
            layout (rows 7-17 of 18, or with ``preserve_color`` rows 9, 11, 15, 16, 17) scaled to the generator's
            number of rows; or an explicit list of row indices (``preserve_color`` is then ignored).
        preserve_color: mix only the subset of rows that JoJoGAN mixes to keep the face's colours (``"auto"`` only).
        alpha: how far a mixed row moves from the reference's code to the random one (1 = replaced, JoJoGAN's
            default; 0 = no mixing at all, G_t then over-fits the reference codes only).
        mix_prob: probability that a training code is mixed at all (else the reference's own code; 1 = always).
        truncation: ψ of the random codes (towards ``w_avg``; 1 = none, JoJoGAN).
        tune_blocks: ``"all"`` (every synthesis block, JoJoGAN) or a list of block names (``["b32", "b64"]``) whose
            weights are trained; the others stay G_s's.
        lambda_mse: weight of a pixel MSE term next to the perceptual loss (0 = perceptual only).
        loss_layers: VGG taps when :func:`finetune` is given a VGG network: ``"conv"`` (d_conv), ``"high"`` or a
            ``{tap: weight}`` dict.
        invert_steps: inversion steps per reference (the cross-domain preset: W+ only).
        invert_lr: inversion learning rate (reference 0.1).
        seed: seed of everything random (inversion, reference order, random codes, mixing); None = a random seed
            unless ``finetune(generator=...)`` is given. The seed used is stored in G_t's metadata.
        preview_every: send a preview (the references' codes rendered by the current G_t) to the callback every N
            fine-tuning steps and at the last one (0 = never).
        w_avg_samples, w_stats_seed: how the inversion estimates w̄ / w_std (reference 10000 / 123).
    """

    steps: int = 300
    lr: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    batch_size: int = 4
    mix_rows: str | list[int] = "auto"
    preserve_color: bool = False
    alpha: float = 1.0
    mix_prob: float = 1.0
    truncation: float = 1.0
    tune_blocks: str | list[str] = "all"
    lambda_mse: float = 0.0
    loss_layers: str | dict[int, float] = "conv"
    invert_steps: int = 500
    invert_lr: float = 0.1
    seed: int | None = 0
    preview_every: int = 0
    w_avg_samples: int = 10000
    w_stats_seed: int = 123

    def __post_init__(self):
        def bad(name, want):
            raise InvalidSettingError(f"FinetuneConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for name, low in (("steps", 1), ("batch_size", 1), ("invert_steps", 0), ("preview_every", 0),
                          ("w_avg_samples", 2)):
            if not is_int(getattr(self, name)) or getattr(self, name) < low:
                bad(name, f"an integer >= {low}")
        for name in ("lr", "invert_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                bad(name, "a positive number (JoJoGAN: lr 2e-3; inversion 0.1)")
        for name in ("alpha", "mix_prob", "truncation"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                bad(name, "a number in [0, 1]")
        v = self.lambda_mse
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            bad("lambda_mse", "a finite number >= 0")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "two numbers in [0, 1)")
        if isinstance(self.mix_rows, str):
            if self.mix_rows != "auto":
                bad("mix_rows", "'auto' or a list of W+ row indices")
        else:
            rows = list(self.mix_rows)
            if not rows or not all(is_int(r) and r >= 0 for r in rows):
                bad("mix_rows", "'auto' or a non-empty list of W+ row indices >= 0")
            self.mix_rows = sorted(set(rows))
        if isinstance(self.tune_blocks, str):
            if self.tune_blocks != "all":
                bad("tune_blocks", "'all' or a list of block names like ['b32', 'b64']")
        else:
            names = list(self.tune_blocks)
            if not names or not all(isinstance(n, str) and n.startswith("b") and n[1:].isdigit() for n in names):
                bad("tune_blocks", "'all' or a non-empty list of block names like ['b32', 'b64']")
            self.tune_blocks = names
        if isinstance(self.loss_layers, str):
            if self.loss_layers not in ("conv", "high"):
                bad("loss_layers", "'conv', 'high' or a {vgg tap: weight} dict")
        elif not isinstance(self.loss_layers, dict) or not self.loss_layers:
            bad("loss_layers", "'conv', 'high' or a non-empty {vgg tap: weight} dict")
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            bad("seed", "None or an integer >= 0")
        if not isinstance(self.preserve_color, bool):
            bad("preserve_color", "True or False")

    def to_dict(self) -> dict:
        """JSON-able dict (stored in G_t's metadata)."""
        return settings_dict(self)


# ----------------------------------------------------------------------------------------------------------------------
# Which rows are mixed, which weights are tuned


def mixed_rows(num_ws: int, config: FinetuneConfig | None = None) -> list[int]:
    """The W+ rows mixed with random codes for a generator with ``num_ws`` rows.

    ``"auto"`` scales JoJoGAN's 18-row layout (mix rows 7-17; with ``preserve_color`` rows 9, 11, 15, 16, 17) to
    ``num_ws`` rows: row ``j`` of the 18-row layout becomes ``round(j · (num_ws − 1) / 17)``. For 18 rows it is
    JoJoGAN's layout exactly; for a 64 px generator (10 rows) it mixes rows 4-9, or 5, 6, 8, 9 with preserve-colour.

    Raises:
        InvalidSettingError: an explicit row is out of range.
    """
    config = config or FinetuneConfig()
    if num_ws < 2:
        raise ShapeError(f"a StyleGAN2 W+ code has at least 2 rows, got {num_ws}")
    if config.mix_rows != "auto":
        bad = [r for r in config.mix_rows if r >= num_ws]
        if bad:
            raise InvalidSettingError(f"FinetuneConfig.mix_rows {bad} are out of range: this generator has {num_ws} "
                                      f"W+ rows (0..{num_ws - 1})")
        return list(config.mix_rows)
    scale = (num_ws - 1) / (_JOJO_NUM_WS - 1)
    src = _JOJO_PRESERVE_COLOR if config.preserve_color else range(_JOJO_FIRST_MIXED, _JOJO_NUM_WS)
    if not config.preserve_color:
        return list(range(int(math.floor(_JOJO_FIRST_MIXED * scale + 0.5)), num_ws))
    return sorted({int(math.floor(j * scale + 0.5)) for j in src})


def _block_of(name: str) -> str | None:
    # synthesis parameter names: "b64.conv0.weight", "b4.const", ...
    head = name.split(".", 1)[0]
    return head if head.startswith("b") and head[1:].isdigit() else None


def tuned_parameter_names(G, config: FinetuneConfig | None = None) -> list[str]:
    """Names (under ``synthesis.``) of the parameters :func:`finetune` trains.

    Raises:
        InvalidSettingError: a block in ``tune_blocks`` does not exist in ``G``.
    """
    config = config or FinetuneConfig()
    blocks = [f"b{r}" for r in G.synthesis.block_resolutions]
    if config.tune_blocks == "all":
        wanted = set(blocks)
    else:
        unknown = sorted(set(config.tune_blocks) - set(blocks))
        if unknown:
            raise InvalidSettingError(f"FinetuneConfig.tune_blocks {unknown} are not blocks of this generator; its "
                                      f"blocks are {blocks}")
        wanted = set(config.tune_blocks)
    names = [n for n, p in G.synthesis.named_parameters() if p.is_floating_point() and _block_of(n) in wanted]
    if not names:
        raise InvalidSettingError(f"FinetuneConfig.tune_blocks={config.tune_blocks!r} selects no parameters")
    return names


# ----------------------------------------------------------------------------------------------------------------------
# finetune()


def _broadcast_tensor(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (through the CPU for gloo, on the device for nccl)."""
    import torch.distributed as dist

    on_cpu = dist.get_backend() == "gloo"
    buf = t.detach().clone().contiguous()
    buf = buf.cpu() if on_cpu else buf
    dist.broadcast(buf, src=0)
    return buf.to(t.device)


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    buf = t.detach().float().reshape(1).clone()
    buf = buf.cpu() if dist.get_backend() == "gloo" else buf
    dist.all_reduce(buf)
    return buf[0] / dist.get_world_size()


def _check_styles(style_images, res):
    if not isinstance(style_images, torch.Tensor) or style_images.ndim != 4 or style_images.shape[1] != 3:
        got = tuple(style_images.shape) if isinstance(style_images, torch.Tensor) else type(style_images).__name__
        raise ShapeError(f"style_images must be an RGB batch [K, 3, H, W] in [-1, 1] (aligned faces), got {got}")
    if style_images.shape[0] < 1:
        raise ShapeError("style_images is empty: give 1-10 style reference images")
    if not style_images.is_floating_point():
        raise ShapeError(f"style_images must be floating point in [-1, 1], got {style_images.dtype}; convert uint8 "
                         f"with x / 127.5 - 1")
    h, w = style_images.shape[-2:]
    if (h, w) != (res, res):
        raise ShapeError(f"style_images are {h}x{w} but the generator renders {res}x{res}: align and resize the "
                         f"references to {res}x{res} first (the CLI and the node do it)")
    lo, hi = float(style_images.min()), float(style_images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1.5 or hi > 1.5:
        raise ShapeError(f"style_images values must be in [-1, 1] (StyleGAN convention), got [{lo:.3g}, {hi:.3g}]; "
                         f"map [0, 1] images with x * 2 - 1")
    if style_images.shape[0] > 10:
        log.warning("finetune: %d style images; the recipe is meant for 1-10 (more only costs time per epoch)",
                    style_images.shape[0])


def _select_feats(feats, idx):
    if hasattr(feats, "feats"):
        return dataclasses.replace(feats, feats={k: v[idx] for k, v in feats.feats.items()})
    return feats[idx]


def _process_group(distributed: bool | None):
    """(rank, world size) of the torchrun process group this call trains in, or None for a single process."""
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed is None:
        distributed = active
    elif distributed and not active:
        raise InvalidSettingError("finetune(distributed=True) needs an initialised torch.distributed process group "
                                  "of several ranks (start the job with torchrun); pass distributed=None or False.")
    return (dist.get_rank(), dist.get_world_size()) if distributed else None


def finetune(G_s, style_images: torch.Tensor, loss, config: FinetuneConfig | None = None, *, device=None, dtype=None,
             callback: Callable | None = None, generator: torch.Generator | None = None,
             w_stats: tuple[torch.Tensor, float] | None = None, style_latents=None, distributed: bool | None = None):
    """Fine-tune a copy of ``G_s`` so that it draws faces in the style of ``style_images`` (JoJoGAN's recipe).

    Args:
        G_s: the source :class:`~hrinv.generator.stylegan2.Generator` (never modified).
        style_images: the style references, aligned like G_s's faces. Shape: ``[K, 3, R, R]`` in [-1, 1],
            ``R = G_s.img_resolution``, K = 1..10.
        loss: a ``PerceptualLoss``, a VGG16 from :func:`hrinv.load_vgg16` (wrapped with ``config.loss_layers``), or a
            callable ``loss(pred, target_img) -> [B]``.
        config: :class:`FinetuneConfig`.
        device, dtype: where / in which dtype G_t is trained and returned (default: G_s's).
        callback: ``callback(step, total, preview)`` with ``total = invert_steps + steps`` (the references'
            inversion first); ``preview`` is ``[K, 3, R, R]`` in [-1, 1] or None. Raise from it to cancel: nothing
            is left behind and G_s is untouched.
        generator: ``torch.Generator`` that draws the seed when ``config.seed`` is None.
        w_stats: precomputed ``(w_avg, w_std)`` of G_s (:func:`hrinv.inversion.compute_w_stats`).
        style_latents: W+ codes of the references in G_s (a :class:`~hrinv.latent.Latent` or ``[K, num_ws, w_dim]``)
            to skip the inversion.
        distributed: train with DistributedDataParallel over the ``torch.distributed`` process group (what
            ``torchrun`` starts). ``None`` (default): when a group of several ranks is initialised; ``False``: this
            process alone even inside such a group. Under DDP every rank calls ``finetune`` with the same
            arguments; each step every rank draws the same *global* batch of ``batch_size x world_size`` codes
            from the shared seed and trains on its own slice of ``batch_size`` (rank r: codes ``r·B .. r·B+B-1``),
            gradients are averaged over the ranks, so every rank returns the same G_t, and that G_t equals a
            single-process run with ``batch_size x world_size`` to float rounding. The references' codes and the
            seed are taken from rank 0.

    Returns:
        G_t: a new generator with G_s's architecture, frozen and in eval mode, on ``device``. ``G_t.meta`` holds
        ``parent_fingerprint`` (= ``G_s.fingerprint()``) and ``finetune`` (settings, seed, mixed rows, tuned blocks,
        loss history summary, the references' inversion PSNR, seconds). Save it with
        :func:`hrinv.save_generator`; both survive a reload.

    Raises:
        ShapeError: bad style images or latents. InvalidSettingError: bad rows/blocks for this generator.
    """
    from .inversion import InversionConfig, invert, psnr
    from .optim import prepare_loss

    config = config or FinetuneConfig()
    t0 = time.perf_counter()
    res, num_ws = G_s.img_resolution, G_s.num_ws
    _check_styles(style_images, res)
    rows = mixed_rows(num_ws, config)
    tuned = tuned_parameter_names(G_s, config)
    if getattr(G_s, "c_dim", 0):
        raise ShapeError(f"fine-tuning conditional generators (c_dim={G_s.c_dim}) is not supported")
    group = _process_group(distributed)  # (rank, world) under torchrun, else None
    seed = config.seed
    if seed is None:
        g = generator if generator is not None else torch.Generator()
        if generator is None:
            g.seed()
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
    if group is not None:  # every rank must draw the same global batches: rank 0's seed
        import torch.distributed as dist

        box = [seed]
        dist.broadcast_object_list(box, src=0)
        seed = int(box[0])
    k = style_images.shape[0]
    total = (0 if style_latents is not None else config.invert_steps) + config.steps
    parent_fp = G_s.fingerprint()

    with grad_context(), BufferPool():  # activation buffers reused across steps, dropped at the end (CPU)
        p0 = next(G_s.parameters())
        device = p0.device if device is None else torch.device(device)
        dtype = p0.dtype if dtype is None else dtype
        refs = style_images.detach().clone().to(device=device, dtype=torch.float32)  # [K, 3, R, R]
        inv_cfg = InversionConfig.preset("cross_domain", steps=max(1, config.invert_steps), lr=config.invert_lr,
                                         seed=seed, loss_layers=config.loss_layers,
                                         w_avg_samples=config.w_avg_samples, w_stats_seed=config.w_stats_seed)
        loss_fn = prepare_loss(loss, device, layers=config.loss_layers, who="finetune()").fn

        # 1. the references' codes in G_s (Eq. 5: W+ only).
        ref_psnr = None
        if style_latents is not None:
            ws = getattr(style_latents, "ws", style_latents)
            if not isinstance(ws, torch.Tensor) or tuple(ws.shape) != (k, num_ws, G_s.w_dim):
                got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
                raise ShapeError(f"style_latents must be W+ codes [K, num_ws, w_dim] = [{k}, {num_ws}, {G_s.w_dim}] "
                                 f"(one per style image, in G_s), got {got}")
            ref_ws = ws.detach().clone().to(device=device, dtype=torch.float32)
        elif config.invert_steps == 0:
            raise InvalidSettingError("FinetuneConfig.invert_steps=0 needs style_latents (the references' W+ codes)")
        else:
            inv_cb = None if callback is None else (lambda s, t, p: callback(s, total, None))
            inv = invert(G_s, refs, loss_fn, inv_cfg, device=device, dtype=dtype, callback=inv_cb, w_stats=w_stats)
            ref_ws = inv.latent.ws.detach().clone().to(device=device, dtype=torch.float32)  # [K, num_ws, w_dim]
            ref_psnr = [float(x) for x in inv.metrics["psnr"]]
        if group is not None:  # the ranks train from rank 0's codes (GPU inversions need not agree to the bit)
            ref_ws = _broadcast_tensor(ref_ws)
        done0 = total - config.steps

        # 2. the private copy and what is trained.
        Gc = copy.deepcopy(G_s).to(device=device, dtype=dtype).eval().requires_grad_(False)
        named = dict(Gc.synthesis.named_parameters())
        params = [named[n] for n in tuned]
        for p in params:
            p.requires_grad_(True)
        has_feats = hasattr(loss_fn, "target")
        lp = next((t for t in loss_fn.parameters()), None) if isinstance(loss_fn, torch.nn.Module) else None
        loss_dtype = lp.dtype if lp is not None and lp.is_floating_point() else torch.float32
        with torch.no_grad():
            tgt = loss_fn.target(refs.to(loss_dtype)) if has_feats else refs
        row_mask = torch.zeros(num_ws, dtype=torch.bool, device=device)
        row_mask[rows] = True
        rng = torch.Generator().manual_seed((seed * 1_000_003 + 29) % 2**63)  # CPU draws: same on any device
        w_avg = Gc.mapping.w_avg.detach().float().to(device)
        opt = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas))
        synthesis = Gc.synthesis
        rank, world = group or (0, 1)
        if group is not None:
            # DDP over the synthesis network: the same start on every rank (DDP broadcasts rank 0's weights),
            # gradients of the tuned weights averaged over the ranks. Gc itself stays a plain module.
            from torch.nn.parallel import DistributedDataParallel

            synthesis = DistributedDataParallel(Gc.synthesis, broadcast_buffers=False,
                                                device_ids=[device.index] if device.type == "cuda" else None)
        history: list[float] = []
        order: list[int] = []
        try:
            for step in range(config.steps):
                idx_list = []  # the global batch: the same draws on every rank; rank r keeps its slice
                while len(idx_list) < config.batch_size * world:
                    if not order:
                        order = torch.randperm(k, generator=rng).tolist()
                    idx_list.append(order.pop())
                mine = slice(rank * config.batch_size, (rank + 1) * config.batch_size)
                z = torch.randn(len(idx_list), Gc.z_dim, generator=rng)[mine]  # [B, z_dim]
                mix = (torch.rand(len(idx_list), generator=rng) < config.mix_prob)[mine].to(device)  # [B]
                idx_list = idx_list[mine]
                idx = torch.tensor(idx_list, device=device)
                b = len(idx_list)
                z = z.to(device=device, dtype=dtype)
                with torch.no_grad():
                    w_rand = Gc.mapping(z, None).float()  # [B, num_ws, w_dim]
                    if config.truncation != 1:
                        w_rand = w_avg + config.truncation * (w_rand - w_avg)
                    w_in = ref_ws[idx]  # [B, num_ws, w_dim]
                    sel = (row_mask[None, :] & mix[:, None])[..., None]  # [B, num_ws, 1]
                    w_in = torch.where(sel, w_in + config.alpha * (w_rand - w_in), w_in)
                img = synthesis(w_in.to(dtype), noise_mode="const", force_fp32=True).float()  # [B, 3, R, R]
                pred = img.to(loss_dtype)
                per = loss_fn(pred, _select_feats(tgt, idx)) if has_feats else loss_fn(pred, refs[idx])
                per = per.float().reshape(b)
                if config.lambda_mse > 0:
                    per = per + config.lambda_mse * (img - refs[idx]).square().flatten(1).mean(1)
                for p in params:
                    p.grad = None
                per.mean().backward()  # under DDP: the gradient averaged over the ranks' slices
                opt.step()
                mean_loss = per.detach().mean()
                if group is not None:
                    mean_loss = _mean_over_ranks(mean_loss)
                history.append(float(mean_loss))
                if callback is not None:
                    done = step + 1
                    want = config.preview_every > 0 and (done % config.preview_every == 0 or done == config.steps)
                    preview = None
                    if want:
                        with torch.no_grad():
                            preview = Gc.synthesis(ref_ws.to(dtype), noise_mode="const").float().clamp(-1, 1)
                    callback(done0 + done, total, preview)
        finally:
            for p in params:
                p.grad = None
            opt.state.clear()

        G_t = Gc.requires_grad_(False).eval()
        with torch.no_grad():
            recon = G_t.synthesis(ref_ws.to(dtype), noise_mode="const").float()  # the references' codes in G_t
            fit = [float(x) for x in psnr(recon, refs)]
    seconds = time.perf_counter() - t0
    tail = history[-max(1, len(history) // 10):]
    head = history[:max(1, len(history) // 10)]
    info = {
        "config": config.to_dict(), "seed": str(seed), "num_styles": k, "mixed_rows": rows,
        "tuned_blocks": sorted({_block_of(n) for n in tuned}, key=lambda s: int(s[1:])),
        "tuned_parameters": int(sum(named[n].numel() for n in tuned)),
        "loss_first": sum(head) / len(head), "loss_last": sum(tail) / len(tail),
        "reference_inversion_psnr": ref_psnr, "reference_psnr_in_G_t": fit, "seconds": seconds,
    }
    if group is not None:
        info["ranks"] = group[1]  # global batch = config.batch_size x ranks
    parent_meta = getattr(G_s, "meta", {}) or {}
    G_t.meta = {"source": None, "format": "hrinv.finetune", "parent_fingerprint": parent_fp,
                "parent_source": parent_meta.get("source"), "finetune": info}
    if parent_meta.get("w_avg"):
        G_t.meta["w_avg"] = parent_meta["w_avg"]
    log.info("fine-tuned G_t from %d style image(s) in %.1f s (loss %.4g -> %.4g; rows %s mixed)", k, seconds,
             info["loss_first"], info["loss_last"], rows)
    return G_t
