"""Distil the 64x64 DCGAN face generator into our StyleGAN2 ``Generator``: the bundled ``stylegan2_face64``.

No pretrained StyleGAN2 face generator can be obtained offline; the only real face generator is the PyTorch-tutorial
DCGAN of PyPI ``gan-face-generate`` (``../shared/weights/dcgan_face64_weights.tar``, nz=100, ngf=64, MIT code,
trained on DigiFace-1M). This script trains a small StyleGAN2 (``z_dim=100``) so that **the same z gives the same
face**: student ``G_s(z)`` regresses the teacher's image ``T(ẑ)`` with a pixel (L1) plus perceptual (our
:class:`hrinv.losses.PerceptualLoss` on the caffe VGG16, at 64 px) loss, Adam, an EMA of the weights, fresh z every
step. ``ẑ = z * sqrt(100) / ||z||``: our mapping network starts with ``normalize_2nd_moment(z)`` (as NVIDIA's), which
removes the norm of z, so the student is trained on the teacher at the same direction and the typical norm; the
held-out figures are reported against both ``T(ẑ)`` and the plain ``T(z)``.

Reproducible: every random draw comes from seeded ``torch.Generator``s (``--seed``); ``--threads`` fixes the number
of CPU threads. Checkpoints every ``--ckpt-every`` steps (and at ``--time-limit``) so a run can be stopped early and
resumed with ``--resume``. At every checkpoint the EMA generator is written with ``mapping.w_avg`` set to the mean
of ``mapping(z)`` over 10,000 z (what truncation and inversion use) and a metrics JSON beside it.

Several processes (CPU, gloo): ``torchrun --nproc-per-node N tools/train_face64.py ...`` trains one student with
DistributedDataParallel. ``--batch`` is per rank: every rank draws the same global batch of ``N x batch`` z from
the seed and keeps its own slice, each rank draws its own noise maps, gradients are averaged, the perceptual weight
is fixed from the ranks' mean L1 / perceptual loss at step 0, and rank 0 alone logs, evaluates and writes the
checkpoints. Without torchrun nothing changes.

Usage::

    python tools/train_face64.py --out runs/face64 --steps 3000 --batch 16          # train
    torchrun --nproc-per-node 2 tools/train_face64.py --out runs/face64 --batch 8   # the same global batch, 2 ranks
    python tools/train_face64.py --out runs/face64 --measure 5                       # only time s/step
    python tools/train_face64.py --out runs/face64 --resume --steps 4000             # continue
    python tools/train_face64.py --evaluate runs/face64/stylegan2_face64.safetensors # held-out figures only
"""

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))

log = logging.getLogger("train_face64")

# The student: 64 px, z_dim 100 (the teacher's nz), w_dim 256, a 4-layer mapping, narrow synthesis widths.
STUDENT = {
    "z_dim": 100, "c_dim": 0, "w_dim": 256, "img_resolution": 64, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 4, "lr_multiplier": 0.1},
    "synthesis_kwargs": {"channels": {"4": 256, "8": 128, "16": 96, "32": 48, "64": 24}, "conv_clamp": 256},
}


class DCGANGenerator(torch.nn.Module):
    """The PyTorch-tutorial DCGAN generator (nz=100, ngf=64): ``z [B, 100] -> image [B, 3, 64, 64]`` in [-1, 1]."""

    def __init__(self, nz=100, ngf=64):
        super().__init__()
        c = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers = [torch.nn.ConvTranspose2d(nz, c[0], 4, 1, 0, bias=False), torch.nn.BatchNorm2d(c[0]),
                  torch.nn.ReLU(True)]
        for a, b in zip(c[:-1], c[1:]):
            layers += [torch.nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), torch.nn.BatchNorm2d(b), torch.nn.ReLU(True)]
        layers += [torch.nn.ConvTranspose2d(c[-1], 3, 4, 2, 1, bias=False), torch.nn.Tanh()]
        self.main = torch.nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z[:, :, None, None])


def load_teacher(path):
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    T = DCGANGenerator()
    T.load_state_dict(sd["netG_state_dict"])
    return T.eval().requires_grad_(False)


def sphere(z):
    """ẑ = z * sqrt(dim) / ||z|| (the point our mapping's normalize_2nd_moment sees)."""
    return z * (z.shape[1] ** 0.5) / z.norm(dim=1, keepdim=True)


def build_student(seed, rgb_init=1.0):
    from hrinv.generator.stylegan2 import Generator

    torch.manual_seed(seed)  # the Generator constructor draws its init from the global RNG; this script owns it
    G = Generator(**STUDENT)
    with torch.no_grad():  # small ToRGB weights: the untrained output starts near grey instead of std ~2 colour blobs
        for name, p in G.named_parameters():
            if ".torgb." in name and name.endswith("weight"):
                p.mul_(rgb_init)
    return G.train().requires_grad_(True)


def psnr(a, b):
    """PSNR in dB of images in [-1, 1] (computed on [0, 1]), per sample."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def set_w_avg(G, num=10000, seed=123):
    from hrinv.inversion import compute_w_stats

    w_avg, w_std = compute_w_stats(G, num_samples=num, seed=seed)
    G.mapping.w_avg.copy_(w_avg)
    return float(w_std)


@torch.no_grad()
def evaluate(G, T, loss, z, batch=64):
    """Held-out figures of ``G`` vs the teacher on the z's: PSNR (dB) and perceptual distance, means."""
    out = {"psnr_vs_T_zhat": [], "psnr_vs_T_z": [], "perceptual_vs_T_zhat": [], "perceptual_vs_T_z": []}
    for i in range(0, z.shape[0], batch):
        zb = z[i:i + batch]
        img = G(zb, noise_mode="const")
        t_hat, t_z = T(sphere(zb)), T(zb)
        out["psnr_vs_T_zhat"].append(psnr(img, t_hat))
        out["psnr_vs_T_z"].append(psnr(img, t_z))
        out["perceptual_vs_T_zhat"].append(loss(img, t_hat))
        out["perceptual_vs_T_z"].append(loss(img, t_z))
    res = {k: float(torch.cat(v).mean()) for k, v in out.items()}
    res["n"] = int(z.shape[0])
    # references: what the teacher's own z-vs-ẑ gap costs, and the distance between two unrelated teacher faces
    zb = z[:batch]
    res["psnr_T_z_vs_T_zhat"] = float(psnr(T(zb), T(sphere(zb))).mean())
    res["perceptual_unrelated_faces"] = float(loss(T(zb), T(zb.roll(1, 0))).mean())
    return res


def make_loss(vgg_path, calibration="rms"):
    from hrinv.losses import PerceptualLoss, load_vgg16

    vgg = load_vgg16(vgg_path)
    if calibration == "rms" and not vgg.calibration:
        calibration = "auto"  # weights without measured constants (e.g. torchvision): raw features, as before
    return PerceptualLoss(vgg, "conv", calibration=calibration)


def save(G_ema, out, step, metrics, args, elapsed):
    from hrinv.io.checkpoints import save_generator

    G = G_ema
    w_std = set_w_avg(G)
    G.meta = {"name": "stylegan2_face64", "trained_by": "tools/train_face64.py", "teacher": "DCGAN 64x64 "
              "(PyPI gan-face-generate 1.1.1, trained on DigiFace-1M)", "step": step, "w_std": w_std}
    ranks = int(os.environ.get("WORLD_SIZE", "1") or 1)
    extra = {"step": step, "seconds": round(elapsed, 1), "args": vars(args), "metrics": metrics,
             **({"ranks": ranks} if ranks > 1 else {}),
             "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
                         + (f" x {ranks} processes" if ranks > 1 else ""),
             "torch": torch.__version__}
    path = save_generator(G, Path(out) / "stylegan2_face64.safetensors", extra_meta=extra)
    with open(Path(out) / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(extra, f, indent=1, default=str)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/face64")
    p.add_argument("--teacher", default=str(SHARED / "weights" / "dcgan_face64_weights.tar"))
    p.add_argument("--vgg", default=str(SHARED / "weights" / "vgg16_imagenet_caffe.safetensors"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--percep-batch", type=int, default=2, help="samples of each batch that also get the VGG loss")
    p.add_argument("--percep-every", type=int, default=2, help="VGG loss on every N-th step (CPU time)")
    p.add_argument("--percep-weight", type=float, default=1.0,
                   help="perceptual term, relative to L1 at step 0 (the ratio is measured once and then fixed)")
    p.add_argument("--calibration", default="rms", choices=["rms", "global", "auto"],
                   help="perceptual-loss calibration of the caffe VGG16 (default rms: what made the bundled G_s, "
                        "when it was PerceptualLoss's default; weights without constants use raw features; auto = global "
                        "is the default now)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--rgb-init", type=float, default=0.1, help="scale of the initial ToRGB weights")
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--time-limit", type=float, default=0, help="minutes; stop, checkpoint and evaluate after this")
    p.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU (no OpenMP spinning)")
    p.add_argument("--measure", type=int, default=0, help="time this many steps, print s/step and exit")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--evaluate", default=None, help="only evaluate this generator file on the held-out z's")
    args = p.parse_args(argv)
    from hrinv.distributed import in_torchrun, init_distributed

    ctx = init_distributed("cpu") if in_torchrun() else None  # torchrun: DDP over gloo, one student on every rank
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s",
                        stream=sys.stdout)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(args, out, ctx, rank, world)
    finally:
        if ctx is not None:
            ctx.close()


def _mean_over_ranks(values, world):
    """The ranks' mean of a few floats (identity in a single process)."""
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world).tolist()


def _train(args, out, ctx, rank, world):

    T = load_teacher(args.teacher)
    loss = make_loss(args.vgg, args.calibration)
    z_held = torch.randn(args.heldout, 100, generator=torch.Generator().manual_seed(10_000 + args.seed))

    if args.evaluate:
        from hrinv.io.checkpoints import load_generator

        if rank != 0:
            return 0
        res = evaluate(load_generator(args.evaluate), T, loss, z_held)
        print(json.dumps(res, indent=1))
        return 0

    G = build_student(args.seed, args.rgb_init)
    G_ema = build_student(args.seed, args.rgb_init).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(args.seed)  # the global batch's z: the same draws on every rank
    noise_rng = torch.Generator().manual_seed(args.seed + 1 + 7919 * rank)  # each rank its own noise maps
    state_path = out / "train_state.pt"
    step, elapsed, w_perc, history, last_perc = 0, 0.0, None, [], float("nan")
    if args.resume and state_path.is_file():
        st = torch.load(str(state_path), map_location="cpu", weights_only=True)
        G.load_state_dict(st["G"])
        G_ema.load_state_dict(st["G_ema"])
        opt.load_state_dict(st["opt"])
        rng.set_state(st["rng"])
        if rank == 0:
            noise_rng.set_state(st["noise_rng"])
        else:  # only rank 0's noise stream is saved; the others restart theirs from the seed, rank and step
            noise_rng.manual_seed(args.seed + 1 + 7919 * rank + 1_000_003 * int(st["step"]))
        step, elapsed, w_perc = int(st["step"]), float(st["elapsed"]), float(st["w_perc"])
        history = json.loads(st["history"])
        log.info("resumed at step %d (%.0f s so far)", step, elapsed)

    total = args.steps if not args.measure else args.measure
    log.info("student %s: %.2f M parameters; teacher DCGAN; batch %d (VGG on %d); %d steps",
             json.dumps(STUDENT["synthesis_kwargs"]["channels"]), sum(p.numel() for p in G.parameters()) / 1e6,
             args.batch, args.percep_batch, total)
    model = G
    if world > 1:  # every rank starts from rank 0's weights; gradients averaged over the ranks
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(G, broadcast_buffers=False)
        log.info("%d ranks (DDP, gloo): global batch %d x %d", world, args.batch, world)
    ema_params = [(pe, p) for pe, p in zip(G_ema.parameters(), G.parameters())]
    t_start = time.time() - elapsed
    t_window, step_window = time.time(), step
    stop_at = t_start + 60 * args.time_limit if args.time_limit else None

    def lr_at(s):  # warm-up 100 steps, cosine to 5 % at the planned end
        warm = min(1.0, (s + 1) / 100)
        return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps)))))

    def checkpoint(final=False):
        if rank != 0:  # rank 0 evaluates and writes; the others wait for it
            ctx.barrier()
            return
        el = time.time() - t_start
        metrics = evaluate(G_ema, T, loss, z_held if final else z_held[:32], batch=32)
        metrics["history"] = history
        path = save(G_ema, out, step, metrics, args, el)
        torch.save({"G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt": opt.state_dict(), "rng": rng.get_state(),
                    "noise_rng": noise_rng.get_state(), "step": step, "elapsed": el, "w_perc": w_perc or 0.0,
                    "history": json.dumps(history)}, str(state_path))
        log.info("checkpoint step %d (%.1f min): held-out PSNR %.2f dB vs T(ẑ), %.2f dB vs T(z); perceptual %.4f "
                 "(unrelated faces %.4f) -> %s", step, el / 60, metrics["psnr_vs_T_zhat"], metrics["psnr_vs_T_z"],
                 metrics["perceptual_vs_T_zhat"], metrics["perceptual_unrelated_faces"], path)
        history.append({"step": step, "minutes": round(el / 60, 2), "psnr": round(metrics["psnr_vs_T_zhat"], 3),
                        "perceptual": round(metrics["perceptual_vs_T_zhat"], 5)})
        if ctx is not None:
            ctx.barrier()

    while step < total:
        z = torch.randn(args.batch * world, 100, generator=rng)[rank * args.batch:(rank + 1) * args.batch]
        with torch.no_grad():
            target = T(sphere(z))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img = model(z, noise_mode="random", generator=noise_rng, fused_modconv=False)  # unfused: 2x faster on CPU
        l1 = (img - target).abs().mean()
        loss_total = l1
        if args.percep_batch > 0 and args.percep_weight > 0 and step % args.percep_every == 0:
            k = args.percep_batch
            lp = loss(img[:k], target[:k]).mean()
            last_perc = float(lp.detach())
            if w_perc is None:  # the same weight on every rank: from the ranks' mean losses
                l1_0, lp_0 = _mean_over_ranks([float(l1.detach()), float(lp.detach())], world)
                w_perc = args.percep_weight * l1_0 / max(lp_0, 1e-12)
                log.info("perceptual weight fixed at %.4g (L1 %.4f, perceptual %.4f at step 0)", w_perc, float(l1),
                         float(lp))
            loss_total = l1 + w_perc * lp
        opt.zero_grad(set_to_none=True)
        loss_total.backward()
        opt.step()
        with torch.no_grad():
            for pe, p_ in ema_params:
                pe.lerp_(p_, 1 - args.ema if step > 50 else 1.0)
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)
        step += 1
        if step % args.log_every == 0 or step == total:
            now = time.time()
            sps = (now - t_window) / max(1, step - step_window)
            t_window, step_window = now, step
            log.info("step %d/%d  L1 %.4f  perceptual %.4f  lr %.2g  %.2f s/step  ETA %.1f min", step, total,
                     float(l1.detach()), last_perc, lr_at(step), sps, sps * (total - step) / 60)
        if args.measure:
            continue
        if step % args.ckpt_every == 0 and step < total:
            checkpoint()
        if stop_at is not None and (ctx.all_reduce_max(float(time.time() > stop_at)) > 0 if ctx is not None
                                    else time.time() > stop_at):  # all ranks stop at the same step
            log.info("time limit of %.1f min reached at step %d", args.time_limit, step)
            break
    if args.measure:
        if rank == 0:
            print(f"{(time.time() - t_start) / total:.3f} s/step (incl. setup)")
        return 0
    if ctx is not None:
        _check_ranks_agree(G_ema, ctx)
    checkpoint(final=True)
    return 0


def _check_ranks_agree(G, ctx):
    """After DDP every rank must hold the same weights (a checksum over the ranks)."""
    total = sum(float(p.detach().double().sum()) for p in G.parameters())
    lo, hi = -ctx.all_reduce_max(-total), ctx.all_reduce_max(total)
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        raise RuntimeError(f"the ranks' students differ after DDP training (checksums {lo} .. {hi})")
    log.info("%d ranks hold the same student (checksum %.6g)", ctx.world_size, total)


if __name__ == "__main__":
    sys.exit(main())
