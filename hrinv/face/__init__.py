"""Faces in photos: detection (MTCNN, pure PyTorch, bundled weights), FFHQ-style alignment with the transform kept,
and paste-back of (stylised) faces into the photo. See docs/face-alignment.md."""

from .align import FaceAlignment, FaceTransform, align_faces, ffhq_quad, warp_face, whole_image_alignment
from .detect import FaceDetection, as_photo, detect_faces
from .paste import paste_back

__all__ = ["FaceAlignment", "FaceDetection", "FaceTransform", "align_faces", "as_photo", "detect_faces", "ffhq_quad",
           "paste_back", "warp_face",
           "whole_image_alignment"]
