"""Type stubs for the Rust extension ``hanpack._core`` (conversion layer only; use
:class:`hanpack.Tokenizer`, which adds argument checks and keyword-only options)."""

from os import PathLike
from typing import AbstractSet, Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from typing import final

from typing_extensions import disjoint_base

__all__ = [
    "BpeTokenizer", "JiebaSegmenter", "LinesStream", "SafetensorsReader", "ShardQuantizer", "SpmStreamDecoder", "SpmTokenizer", "TokenizerBase", "__version__", "PACKING", "CUDA_SOURCES",
    "dequantize", "load_gguf", "read_gguf_header", "encode_gguf_header", "ggml_quantize", "ggml_dequantize", "ggml_types", "pack_codes", "quant_matmul", "quantize",
    "UnitCounter", "extend_spm", "has_cjk", "spm_to_hf_json", "spm_unreachable", "spm_without_dummy_prefix",
]
__version__: str
#: The packed layouts' name (``hanpack_core::quant::formats``).
PACKING: str
#: The CUDA kernel sources (`cuda/`), `(file name, text)`; see `hanpack.cuda_kernels`.
CUDA_SOURCES: list[tuple[str, str]]

@disjoint_base
class TokenizerBase:
    """Base of :class:`hanpack.Tokenizer`: its per-line methods, implemented in Rust."""
    def __new__(cls, model: SpmTokenizer | BpeTokenizer) -> TokenizerBase: ...
    def encode(
        self,
        text: str,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        allowed_special: Literal["all"] | AbstractSet[str] | Sequence[str] | None = None,
        disallowed_special: Literal["all"] | AbstractSet[str] | Sequence[str] | None = None,
    ) -> list[int]: ...
    def decode(self, ids: Sequence[int] | npt.NDArray[np.integer], *, skip_special_tokens: bool = False) -> str: ...
    def _encode_lines_core(
        self, source: bytes | tuple[str, int, int, int], json_field: str | None, narrow: bool, add_bos: bool,
        add_eos: bool, num_threads: int | None = None,
    ) -> _LinesResult: ...
    def _lines_stream(self, narrow: bool, add_bos: bool, add_eos: bool, num_threads: int | None) -> LinesStream: ...

_LinesResult = tuple[
    tuple[
        npt.NDArray[np.uint16] | npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.int64],
        npt.NDArray[np.int64], list[tuple[str, int, str]], int,
    ],
    int,
]

@final
class LinesStream:
    """Batches of lines encoded in the pool, taken back in submission order (hanpack.data)."""
    def submit(self, source: bytes | tuple[str, int, int, int], json_field: str | None = None) -> None: ...
    def take(self) -> _LinesResult: ...
    def close(self) -> None: ...

@final
class SpmTokenizer:
    @staticmethod
    def from_bytes(data: bytes, origin: str) -> SpmTokenizer: ...
    @staticmethod
    def from_file(path: str | PathLike[str]) -> SpmTokenizer: ...
    def to_bytes(self) -> bytes: ...
    def encode(self, text: str, add_bos: bool, add_eos: bool) -> list[int]: ...
    def encode_as_pieces(self, text: str) -> list[str]: ...
    def normalize(self, text: str) -> str: ...
    def encode_batch(
        self, texts: list[str], add_bos: bool, add_eos: bool, num_threads: int | None = None
    ) -> list[list[int]]: ...
    def encode_batch_flat(
        self, texts: list[str], add_bos: bool, add_eos: bool, num_threads: int | None = None
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: Sequence[int] | npt.NDArray[np.integer]) -> str: ...
    def decode_batch(
        self, batch: Iterable[Sequence[int] | npt.NDArray[np.integer]], num_threads: int | None = None
    ) -> list[str]: ...
    def id_to_piece(self, id: int) -> str | None: ...
    def piece_to_id(self, piece: str) -> int: ...
    def piece_score(self, id: int) -> float | None: ...
    def piece_type(self, id: int) -> str | None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def model_type(self) -> str: ...
    @property
    def byte_fallback(self) -> bool: ...
    @property
    def heap_bytes(self) -> int: ...
    @property
    def unk_id(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    def stream_decoder(self) -> SpmStreamDecoder: ...

@final
class SpmStreamDecoder:
    def step(self, id: int) -> str: ...
    def finish(self) -> str: ...

@final
class BpeTokenizer:
    @staticmethod
    def from_json(data: bytes, origin: str) -> BpeTokenizer: ...
    @staticmethod
    def from_tiktoken(
        data: bytes, origin: str, pattern: str, special_tokens: list[tuple[str, int]], nfc: bool = False
    ) -> BpeTokenizer: ...
    @staticmethod
    def from_vocab_merges(
        vocab: bytes,
        merges: bytes,
        origin: str,
        pattern: str,
        special_tokens: list[tuple[str, int]],
        nfc: bool = False,
    ) -> BpeTokenizer: ...
    def to_json(self) -> bytes: ...
    def encode(
        self,
        text: str,
        add_bos: bool,
        add_eos: bool,
        allowed: list[str] | None = ...,
        disallowed: list[str] | None = None,
    ) -> list[int]: ...
    def encode_as_pieces(
        self, text: str, allowed: list[str] | None = None, disallowed: list[str] | None = None
    ) -> list[str]: ...
    def normalize(self, text: str) -> str: ...
    def encode_batch(
        self,
        texts: list[str],
        add_bos: bool,
        add_eos: bool,
        num_threads: int | None = None,
        allowed: list[str] | None = None,
        disallowed: list[str] | None = None,
    ) -> list[list[int]]: ...
    def encode_batch_flat(
        self,
        texts: list[str],
        add_bos: bool,
        add_eos: bool,
        num_threads: int | None = None,
        allowed: list[str] | None = None,
        disallowed: list[str] | None = None,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: Sequence[int] | npt.NDArray[np.integer], skip_special: bool = False) -> str: ...
    def decode_bytes(self, ids: Sequence[int] | npt.NDArray[np.integer], skip_special: bool = False) -> bytes: ...
    def decode_batch(
        self,
        batch: Iterable[Sequence[int] | npt.NDArray[np.integer]],
        num_threads: int | None = None,
        skip_special: bool = False,
    ) -> list[str]: ...
    def id_to_piece(self, id: int) -> str | None: ...
    def piece_to_id(self, piece: str) -> int: ...
    def is_special(self, id: int) -> bool: ...
    def special_tokens(self) -> list[tuple[str, int]]: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def model_type(self) -> str: ...
    @property
    def heap_bytes(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def unk_id(self) -> int: ...

def load_gguf(path: str | PathLike[str]) -> SpmTokenizer | BpeTokenizer: ...
def read_gguf_header(
    path: str | PathLike[str],
) -> tuple[int, list[tuple[str, int, Any]], list[tuple[str, list[int], int, int]], int]: ...
def encode_gguf_header(
    metadata: list[tuple[str, int, Any]], tensors: list[tuple[str, list[int], int, int]], alignment: int
) -> tuple[bytes, list[int]]: ...
def ggml_quantize(
    x: npt.NDArray[np.float32],
    type_name: str,
    imatrix: npt.NDArray[np.float32] | None = None,
    name: str = "tensor",
    num_threads: int | None = None,
) -> npt.NDArray[np.uint8]: ...
def ggml_dequantize(
    data: npt.NDArray[np.uint8], type_name: str, n_per_row: int, num_threads: int | None = None
) -> npt.NDArray[np.float32]: ...
def ggml_types() -> list[tuple[str, int, int, int]]: ...
def quantize(
    weight: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    dtype: str,
    bits: int,
    group_size: int | None,
    sym: bool,
    method: str,
    importance: npt.NDArray[np.float32] | None,
    name: str,
    num_threads: int | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16], npt.NDArray[np.uint16], int]: ...
def dequantize(
    packed: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.uint16],
    zeros: npt.NDArray[np.uint16],
    bits: int,
    rows: int,
    cols: int,
    group_size: int,
    out_dtype: str,
    num_threads: int | None = None,
) -> npt.NDArray[np.float32] | npt.NDArray[np.uint16]: ...
def pack_codes(codes: npt.NDArray[np.uint8], bits: int, group_size: int | None) -> npt.NDArray[np.uint8]: ...
def quant_matmul(
    x: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    packed: npt.NDArray[np.uint8],
    scales: npt.NDArray[np.uint16],
    zeros: npt.NDArray[np.uint16],
    bits: int,
    rows: int,
    cols: int,
    group_size: int,
    x_bf16: bool = False,
    num_threads: int | None = None,
    act_bits: int | None = None,
) -> npt.NDArray[np.float32]: ...

@final
class SafetensorsReader:
    """An open safetensors file (memory-mapped, header validated)."""
    def __new__(cls, path: str | PathLike[str]) -> SafetensorsReader: ...
    def tensors(self) -> list[tuple[str, str, list[int]]]: ...
    def metadata(self) -> dict[str, str]: ...
    def read(self, name: str) -> tuple[str, list[int], bytes]: ...

@final
class ShardQuantizer:
    """One shard being quantized; ``step()`` does one tensor with the GIL released."""
    def __new__(
        cls,
        src: str | PathLike[str],
        dst: str | PathLike[str],
        to_quantize: Sequence[str],
        bits: int,
        group_size: int | None,
        sym: bool,
        method: str,
        metadata: dict[str, str],
        num_threads: int | None = None,
        importance: Mapping[str, Sequence[float]] | None = None,
        given: Mapping[
            str, tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16], npt.NDArray[np.uint16]]
        ] | None = None,
    ) -> ShardQuantizer: ...
    def __len__(self) -> int: ...
    def step(self) -> dict[str, object] | None: ...
    def finish(self) -> None: ...

@final
class JiebaSegmenter:
    """A jieba dictionary (and HMM tables) for jieba-exact segmentation."""
    def __new__(
        cls,
        dict_text: str,
        origin: str,
        hmm: tuple[dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, float]]] | None = None,
        user_dicts: list[tuple[str, str]] = ...,
    ) -> JiebaSegmenter: ...
    def has_hmm(self) -> bool: ...
    def heap_bytes(self) -> int: ...
    def cut(self, text: str, hmm: bool) -> list[str]: ...
    def cut_batch(self, texts: list[str], hmm: bool, num_threads: int | None = None) -> list[list[str]]: ...

def extend_spm(
    base: bytes,
    origin: str,
    pieces: list[str],
    *,
    above: bool,
    max_piece_chars: int,
    add_missing_chars: bool,
    repair: bool,
) -> tuple[bytes, int, list[tuple[str, int, float, str]], list[tuple[str, str]], list[str]]:
    """Extends a BPE model: (model, base size, added (piece, id, score, origin), skipped (piece, reason), unreachable)."""

def spm_unreachable(model: bytes, origin: str) -> list[tuple[int, str]]:
    """NORMAL pieces that their own text does not produce."""

def spm_to_hf_json(model: bytes, origin: str) -> str:
    """tokenizer.json text for a SentencePiece BPE model."""

def spm_without_dummy_prefix(model: bytes, origin: str) -> bytes:
    """The model with add_dummy_prefix off."""

def has_cjk(text: str) -> bool:
    """Whether the text has a CJK character (the rule extend_spm applies)."""

@final
class UnitCounter:
    """Unit counts of a training corpus, filled batch by batch."""
    def __new__(cls, *, add_dummy_prefix: bool, split_digits: bool, hmm: bool) -> UnitCounter: ...
    def add_lines(
        self, lines: list[str], weight: int, segmenter: JiebaSegmenter | None = None, num_threads: int | None = None
    ) -> None: ...
    def add_text(
        self,
        block: bytes,
        origin: str,
        offset: int,
        weight: int,
        segmenter: JiebaSegmenter | None = None,
        num_threads: int | None = None,
    ) -> None: ...
    def prune(self, max_units: int) -> None: ...
    def stats(self) -> tuple[int, int, int, int]: ...
    def top_words(self, n: int, min_chars: int, max_chars: int) -> list[tuple[str, int]]: ...
    def train_bpe(
        self,
        *,
        vocab_size: int,
        character_coverage: float,
        byte_fallback: bool,
        max_piece_chars: int,
        min_frequency: int,
        num_threads: int | None = None,
    ) -> tuple[bytes, int, int, int]: ...
