"""Typed errors raised by :mod:`hrinv`.

Every message says what was expected, what was received, and what to do about it. The ComfyUI nodes let these
propagate unchanged, so the message a user sees in the host's error dialog is the one written here.
"""

__all__ = [
    "HRInvError",
    "CheckpointError",
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "CheckpointCorruptError",
    "LatentFileError",
    "IncompatibleGeneratorsError",
    "ShapeError",
    "WeightsNotFoundError",
    "ImageReadError",
    "DatasetLayoutError",
    "InvalidSettingError",
    "NonFiniteError",
    "NoFaceFoundError",
]


class HRInvError(Exception):
    """Base class of every error raised on purpose by hrinv."""


class CheckpointError(HRInvError, ValueError):
    """A checkpoint file could not be turned into a network."""


class CheckpointFormatError(CheckpointError):
    """The file is readable but its layout is not one we understand (or is a layout we refuse, e.g. TF pickles)."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks to run code or to import something outside the allow-list. Nothing from it was executed."""


class CheckpointCorruptError(CheckpointError):
    """The file is truncated or damaged."""


class LatentFileError(CheckpointError):
    """A latent file (.safetensors / .npz) is truncated, damaged, not a latent, or holds non-finite values."""


class IncompatibleGeneratorsError(HRInvError, ValueError):
    """Two generators (or latents) cannot be combined: different architecture, shapes or key sets."""


class ShapeError(HRInvError, ValueError):
    """A tensor argument has the wrong shape, range or dtype."""


class WeightsNotFoundError(HRInvError, FileNotFoundError):
    """A weights file that the operation needs is missing."""


class ImageReadError(HRInvError, ValueError):
    """An image file is missing, not an image, or truncated/corrupt."""


class DatasetLayoutError(HRInvError, ValueError):
    """A folder of images does not have the expected layout (empty folder, unmatched names, images too small)."""


class InvalidSettingError(HRInvError, ValueError):
    """A setting (a λ schedule, a row selection, an option value) is malformed or out of range."""


class NonFiniteError(HRInvError, ArithmeticError):
    """An optimisation produced NaN or infinity; the message names the step and the likely cause."""

    def __init__(self, message, step=None):
        super().__init__(message)
        self.step = step


class NoFaceFoundError(HRInvError, ValueError):
    """Face detection found no face (or none large enough) in a photo that was to be aligned."""
