"""hanpack's exception hierarchy.

Every error hanpack raises on purpose is a :class:`HanpackError`; each class also
subclasses the builtin that fits, so ``except ValueError`` keeps working::

    >>> from hanpack.exceptions import ModelFormatError
    >>> issubclass(ModelFormatError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "HanpackError",
    "ModelFormatError",
    "CheckpointFormatError",
    "InvalidModelError",
    "TokenIdError",
    "InvalidArgumentError",
    "QuantizationError",
    "NonFiniteWeightError",
    "InternalError",
    "UnsupportedTokenizerError",
    "DisallowedSpecialTokenError",
    "DataInputError",
    "CudaKernelError",
]


class HanpackError(Exception):
    """Base class of every hanpack error."""


class ModelFormatError(HanpackError, ValueError):
    """The file is not a model of the expected format (truncated, corrupt, other format)."""


class CheckpointFormatError(ModelFormatError):
    """A checkpoint file that is not valid safetensors: truncated, a header that lies about
    offsets, dtypes or shapes, an unknown dtype (the message names the file and tensor)."""


class InvalidModelError(HanpackError, ValueError):
    """The file parses, but the model breaks a rule its reference implementation enforces
    (for SentencePiece: duplicate or empty pieces, no ``<unk>``, missing byte pieces, ...)."""


class TokenIdError(HanpackError, IndexError):
    """A token id outside ``0 .. vocab_size - 1``."""


class InvalidArgumentError(HanpackError, ValueError):
    """An argument that does not fit the model (e.g. ``add_bos=True`` without a BOS piece)."""


class QuantizationError(HanpackError, ValueError):
    """A weight cannot be quantized as asked, or quantized arrays do not match their
    layout; the message names the tensor and the group or array at fault."""


class NonFiniteWeightError(QuantizationError):
    """A NaN or infinity in a weight; the message names the tensor and ``[row, col]``."""


class InternalError(HanpackError, RuntimeError):
    """A bug in hanpack's Rust core, caught at the boundary instead of crashing Python."""


class UnsupportedTokenizerError(HanpackError, ValueError):
    """A well-formed tokenizer file that uses a component hanpack does not implement (the
    message names the file and the component, e.g. a ``Precompiled`` normalizer)."""


class DisallowedSpecialTokenError(HanpackError, ValueError):
    """The text contains a special token's text that ``encode`` was not allowed to treat as
    special (tiktoken's policy: pass ``allowed_special`` or ``disallowed_special=()``)."""


class DataInputError(HanpackError, ValueError):
    """A record of an input file that cannot become a document (unreadable file, invalid
    UTF-8, a line that is not JSON or lacks the text field); ``path``, ``line`` (0 for the
    whole file) and ``kind`` say which and why."""

    def __init__(self, path: str, line: int, kind: str, message: str):
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message} [{kind}]")
        self.path, self.line, self.kind, self.message = path, line, kind, message

    def __reduce__(self):  # type: ignore[override]
        return (type(self), (self.path, self.line, self.kind, self.message))


class CudaKernelError(HanpackError, RuntimeError):
    """hanpack's CUDA kernels cannot run here or failed: no CUDA device or no
    ``cuda-bindings`` package, an NVRTC compile error (the message holds its log), a CUDA
    driver error, or tensors on the wrong device."""
