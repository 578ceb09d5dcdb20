"""Face-embedding networks for the ID-retrieval metric.

- :func:`load_face_embedder` (``"dlib"`` or ``"arcface"`` or a file path) -> :class:`FaceEmbedder` with
  ``.embed(images [B, 3, H, W] in [0, 1]) -> [B, D]`` unit-norm, ``.dim``, ``.name``, ``.preprocess``.
- :mod:`.dlib_resnet`: dlib's face ResNet read from its ``.dat`` (no dlib dependency).
- :mod:`.irse50`: ArcFace IR-SE50 from ``model_ir_se50.pth``.
- :mod:`.preprocess`: the documented preprocessing conventions (``paper``, ``psp``, ``dlib``, ``chip``, ``none``).
"""

from .embedder import FaceEmbedder, default_search_dirs, load_face_embedder
from .preprocess import PREPROCESS

__all__ = ["PREPROCESS", "FaceEmbedder", "default_search_dirs", "load_face_embedder"]
