"""Models and pictures that ship inside the package (package data), each checked against its sha256 before use.

``manifest.json`` beside this file lists every bundled file: its sha256, size, licence, source and the model card
that describes it. Nothing here is loaded at import; :func:`path` verifies a file the first time it is asked for
(once per process) and returns its location, so callers read it with the ordinary loaders
(``hrinv.load_generator(hrinv.bundled.path("stylegan2_face64.safetensors"))``).
"""

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from hrinv.errors import CheckpointCorruptError, WeightsNotFoundError

__all__ = ["ROOT", "manifest", "names", "path", "sha256_file"]

ROOT = Path(__file__).resolve().parent
_MANIFEST = ROOT / "manifest.json"


def sha256_file(p, chunk=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def manifest():
    """``{file name: {"sha256", "bytes", "kind", "licence", "source", "card"}}`` for every bundled file."""
    if not _MANIFEST.is_file():
        return {}
    with open(_MANIFEST, encoding="utf-8") as f:
        return json.load(f)["files"]


def names(kind=None):
    """Bundled file names, optionally only those of one ``kind`` (``generator``, ``vgg16``, ``detector``, ``image``)."""
    return sorted(n for n, e in manifest().items() if kind is None or e.get("kind") == kind)


@lru_cache(maxsize=None)
def _verified(name):
    entry = manifest().get(name)
    if entry is None:
        raise WeightsNotFoundError(
            f"{name!r} is not a bundled file of hrinv. Bundled files: {', '.join(names()) or 'none'}.")
    p = ROOT / name
    if not p.is_file():
        raise WeightsNotFoundError(
            f"the bundled file {name!r} is missing from {ROOT}: the installation is incomplete. Reinstall the package "
            f"(pip install --force-reinstall hrinversion) or re-clone the node pack.")
    digest = sha256_file(p)
    if digest != entry["sha256"]:
        raise CheckpointCorruptError(
            f"the bundled file {p} is damaged: its sha256 is {digest}, expected {entry['sha256']} (manifest.json). "
            f"Reinstall the package or re-clone the node pack.")
    return p


def path(name, verify=True):
    """Location of the bundled file ``name``; with ``verify`` (default) its sha256 is checked once per process."""
    if verify:
        return _verified(name)
    if name not in manifest():
        raise WeightsNotFoundError(f"{name!r} is not a bundled file of hrinv. Bundled files: {', '.join(names())}.")
    return ROOT / name
