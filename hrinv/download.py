"""Fetch the real model files on request (``hrinv download``): progress, sha256 check, resume, atomic rename.

This is the only module of hrinv that opens a network connection, and only when :func:`download` is called
(``hrinv download NAME``). Nothing imports it at run time: the ComfyUI nodes and the library never fetch anything;
a missing model is an error that names the folder to put it in.

How a download goes:

- the bytes go to ``<dest>/<file>.part`` (``<file>.bz2.part`` for a compressed source), with a tqdm progress bar;
- an interrupted transfer is retried from where it stopped (HTTP ``Range: bytes=N-``); if the server ignores
  ``Range`` (answers 200), the ``.part`` is started again from zero. When every retry fails, the ``.part`` stays and
  running the same command again resumes it (``keep_partial=False`` / ``--no-resume`` deletes it instead);
- the size and the sha256 are checked; on a mismatch the file is deleted and :class:`DownloadError` says what came
  and what was expected. A file without a published sha256 is kept and its computed sha256 is printed;
- the finished file is renamed into place (``os.replace``: readers never see a half-written model).

Only ``http``/``https`` URLs are accepted, with the standard library's ``urllib`` (no extra dependency).
"""

from __future__ import annotations

import bz2
import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from .errors import HRInvError

__all__ = ["MODELS", "COMFY_FOLDERS", "DownloadError", "ModelFile", "comfyui_models_dir", "destination", "download",
           "sha256_file"]

CHUNK = 1 << 16


class DownloadError(HRInvError, OSError):
    """A download failed (network error after the retries, bad size, sha256 mismatch) or was refused."""


@dataclass(frozen=True)
class ModelFile:
    """One file users may fetch. ``sha256``/``bytes`` describe the final file (after unpacking); None = not
    published (the computed value is printed). ``url`` None = no direct link exists (``page`` says where to get
    it). ``unpack``: ``"bz2"`` when the URL serves a .bz2 of the file."""

    name: str
    folder: str                     # key of COMFY_FOLDERS
    what: str
    url: str | None
    sha256: str | None
    bytes: int | None
    licence: str
    page: str
    unpack: str | None = None
    note: str = ""


# Our ComfyUI model folders (sub-folders of ComfyUI/models), the same as nodes/_comfy.py MODEL_FOLDERS
# (tests/test_download.py checks that the two agree).
COMFY_FOLDERS = {"stylegan2": "hrinv_stylegan", "vgg": "hrinv_vgg", "facerecog": "hrinv_faceid"}

_NV = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
_NV_PAGE = "https://github.com/NVlabs/stylegan2-ada-pytorch#data-repository"
_NV_LICENCE = "NVIDIA Source Code License-NC (non-commercial)"

MODELS: dict[str, ModelFile] = {m.name: m for m in [
    ModelFile("ffhq.pkl", "stylegan2", "G_s: StyleGAN2-ADA FFHQ 1024 px (NVIDIA)", _NV + "ffhq.pkl", None, None,
              _NV_LICENCE, _NV_PAGE, note="no sha256 is published; the computed one is printed"),
    ModelFile("metfaces.pkl", "stylegan2", "G_t: StyleGAN2-ADA MetFaces 1024 px, fine-tuned from ffhq.pkl (NVIDIA)",
              _NV + "metfaces.pkl", None, None, _NV_LICENCE, _NV_PAGE,
              note="no sha256 is published; the computed one is printed"),
    ModelFile("stylegan2-ffhq-config-f.pt", "stylegan2", "G_s: rosinality StyleGAN2 FFHQ config-f 1024 px (.pt)",
              None, None, None, "NVIDIA Source Code License-NC (converted from NVIDIA's weights)",
              "https://github.com/rosinality/stylegan2-pytorch (README: 'Pretrained Checkpoints', a Google Drive link)",
              note="no direct link (Google Drive): download it in a browser"),
    ModelFile("vgg16-397923af.pth", "vgg", "VGG16 ImageNet weights (torchvision) for the perceptual loss",
              "https://download.pytorch.org/models/vgg16-397923af.pth",
              "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553433881,
              "BSD-3-Clause (torchvision)",
              "https://pytorch.org/vision/stable/models/generated/torchvision.models.vgg16"),
    ModelFile("dlib_face_recognition_resnet_model_v1.dat", "facerecog",
              "dlib ResNet face network (128-D) for the ID-retrieval score",
              "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
              "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 22466066, "CC0 1.0",
              "https://github.com/davisking/dlib-models", unpack="bz2",
              note="sha256 of the unpacked .dat, measured on the identical copy in PyPI face-recognition-models 0.3.0"),
    ModelFile("model_ir_se50.pth", "facerecog", "ArcFace IR-SE50 (the paper's ID network)", None, None, None,
              "MIT (code); weights as released by the author",
              "https://github.com/TreB1eN/InsightFace_Pytorch (README: 'Pretrained Models', OneDrive / Baidu links)",
              note="no direct link: download it in a browser"),
]}


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Where files go


def comfyui_models_dir(start: Path | None = None) -> Path | None:
    """``ComfyUI/models`` when this package runs from ``ComfyUI/custom_nodes/<pack>/hrinv`` (the node pack cloned
    into ComfyUI), else None."""
    here = Path(start or __file__).resolve()
    for parent in here.parents:
        if parent.name == "custom_nodes" and (parent.parent / "models").is_dir():
            return parent.parent / "models"
    return None


def destination(model: ModelFile, dir: str | os.PathLike | None = None,
                comfyui: str | os.PathLike | None = None) -> Path:
    """The folder a model goes into: ``dir`` as given; else ``<comfyui>/models/<folder>``; else, when the pack sits
    in ``ComfyUI/custom_nodes``, that ComfyUI's ``models/<folder>``. Raises :class:`DownloadError` if none applies."""
    if dir is not None:
        return Path(dir)
    if comfyui is not None:
        root = Path(comfyui)
        if not (root / "models").is_dir():
            raise DownloadError(f"--comfyui {root}: expected a ComfyUI folder with a models/ sub-folder; it has none. "
                                f"Give the ComfyUI root (the folder with main.py and models/), or use --dir.")
        return root / "models" / model.folder
    found = comfyui_models_dir()
    if found is not None:
        return found / model.folder
    raise DownloadError("where should the file go? Give --dir FOLDER, or --comfyui /path/to/ComfyUI to put it in "
                        f"ComfyUI/models/{model.folder} (found automatically when the pack is in "
                        f"ComfyUI/custom_nodes).")


# ----------------------------------------------------------------------------------------------------------------
# The transfer


class _Interrupted(Exception):
    pass


def _check_url(url: str):
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"refusing to fetch {url!r}: only http:// and https:// URLs are allowed.")


def _bar(total, initial, desc, quiet):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr)


def _fetch_once(url: str, part: Path, timeout: float, quiet: bool, desc: str, log) -> int | None:
    """Append the rest of ``url`` to ``part`` (resuming from its size). Returns the expected total size (None if
    the server did not say). Raises _Interrupted on a network failure or a short body (the .part is kept)."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "hrinv-download"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:           # nothing left past what we have: the .part is (at least) complete
            return have
        if 500 <= e.code < 600:
            raise _Interrupted(f"server error {e.code} {e.reason}") from None
        raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}. Check the URL (or --url) and try again "
                            f"later.") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Interrupted(f"cannot connect: {reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            cr = resp.headers.get("Content-Range", "")
            start = cr.split(" ", 1)[-1].split("-", 1)[0] if cr else ""
            if start != str(have):
                log(f"the server resumed at {start or '?'} instead of byte {have}; starting again from zero")
                resp.close()
                part.unlink()
                return _fetch_once(url, part, timeout, quiet, desc, log)
            mode, total = "ab", (have + length if length is not None else None)
        else:
            if have:
                log(f"the server does not resume (HTTP {status} to a Range request); starting again from zero")
            mode, have, total = "wb", 0, length
        bar = _bar(total, have, desc, quiet)
        got = 0
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (socket.timeout, ConnectionError, HTTPException, OSError) as e:
                        raise _Interrupted(f"connection lost after {have + got} bytes ({e})") from None
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if length is not None and got < length:
            raise _Interrupted(f"connection closed after {have + got} of {total} bytes")
        return total


def download(model: ModelFile | str, dest_dir: str | os.PathLike, url: str | None = None,
             sha256: str | None = None, *, force: bool = False, retries: int = 3, timeout: float = 30.0,
             keep_partial: bool = True, quiet: bool = False, log=None, retry_wait: float = 1.0) -> Path:
    """Download ``model`` (a :class:`ModelFile` or a name in :data:`MODELS`) into ``dest_dir``; return the final
    path. ``url``/``sha256`` override the table's (a mirror; a checksum you trust). An existing file is kept when
    it matches the sha256 (or no sha256 is known); with a different sha256 it is refused unless ``force``."""
    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    if isinstance(model, str):
        if model not in MODELS:
            raise DownloadError(f"unknown model {model!r}. Known: {', '.join(MODELS)} (see `hrinv download --list`).")
        model = MODELS[model]
    url = url or model.url
    if not url:
        raise DownloadError(f"{model.name} has no direct download link: {model.note or 'download it yourself'}. "
                            f"Get it from {model.page} and put it in {dest_dir}.")
    _check_url(url)
    expected = (sha256 or model.sha256 or "").lower() or None
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise DownloadError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits).")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / model.name

    if final.exists() and not force:
        digest = sha256_file(final)
        if expected is None or digest == expected:
            log(f"{final} is already there (sha256 {digest}); nothing to do.")
            return final
        raise DownloadError(f"{final} already exists but its sha256 is {digest}, not {expected}. Move it away or "
                            f"pass --force to replace it.")

    compressed = model.unpack is not None and url.endswith("." + model.unpack)
    part = dest_dir / (model.name + (f".{model.unpack}" if compressed else "") + ".part")
    attempt, total = 0, None
    while True:
        try:
            if part.exists() and part.stat().st_size:
                log(f"resuming {part.name} at {part.stat().st_size} bytes")
            total = _fetch_once(url, part, timeout, quiet, model.name, log)
            break
        except _Interrupted as e:
            attempt += 1
            if attempt > retries:
                size = part.stat().st_size if part.exists() else 0
                if not keep_partial:
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"downloading {model.name} from {url} failed: {e}. The partial file was "
                                        f"deleted; run the command again to start over.") from None
                raise DownloadError(f"downloading {model.name} from {url} failed after {retries} retries: {e}. "
                                    f"{size} bytes are kept in {part}; run the same command again to resume.") from None
            log(f"{e}; retrying ({attempt}/{retries})")
            time.sleep(retry_wait * attempt)
        except BaseException:
            if not keep_partial:
                part.unlink(missing_ok=True)
            raise

    if total is not None and part.stat().st_size != total:
        part.unlink()
        raise DownloadError(f"{model.name}: received {part.stat().st_size if part.exists() else 0} bytes, the server "
                            f"announced {total}; the file was deleted. Run the command again.")
    ready = part
    if compressed:
        ready = dest_dir / (model.name + ".part")
        try:
            with bz2.open(part, "rb") as src, open(ready, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        except (OSError, EOFError, ValueError) as e:
            part.unlink(missing_ok=True)
            ready.unlink(missing_ok=True)
            raise DownloadError(f"{model.name}: the downloaded .{model.unpack} file does not unpack ({e}); it was "
                                f"deleted. Run the command again.") from None
        part.unlink()
    size = ready.stat().st_size
    digest = sha256_file(ready)
    if expected is not None and digest != expected:
        ready.unlink()
        raise DownloadError(f"{model.name}: sha256 mismatch. Expected {expected} ({model.bytes or '?'} bytes), got "
                            f"{digest} ({size} bytes) from {url}. The file was deleted. The server may serve a "
                            f"different or damaged file: try again later or fetch it from {model.page}.")
    os.replace(ready, final)
    if expected is None:
        log(f"{model.name}: no published sha256 to check against; computed sha256 {digest} ({size} bytes). "
            f"Compare it with a copy you trust.")
    else:
        log(f"{model.name}: sha256 verified ({digest}).")
    return final
