"""A reader for CTranslate2 ``model.bin`` files (binary layout version 6), no ctranslate2 runtime.

CTranslate2 (github.com/OpenNMT/CTranslate2, ``python/ctranslate2/specs/model_spec.py``)
serialises a model spec as little-endian records:

    u32 version (6) | str spec name | u32 spec revision | u32 n_variables
    n_variables x ( str name | u8 rank | rank x u32 dim | u8 dtype | u32 n_bytes | bytes )
    u32 n_aliases | n_aliases x ( str alias | str target name )

where ``str`` is a u16 length (including a trailing NUL) followed by UTF-8 bytes, and dtype is
CTranslate2's enum: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Scalars
(rank 0) carry spec options such as ``decoder/num_heads``. Aliases name shared tensors (tied
embeddings: ``decoder/projection/weight -> decoder/embeddings/weight``); they are resolved to
the same array.

    >>> ct2 = read_ct2(path)                     # doctest: +SKIP
    >>> ct2.spec, ct2.arrays["encoder/conv1/weight"].shape
    ('WhisperSpec', (384, 80, 3))

Only the layout is read here; mapping the names onto a model family is the job of the family's
loader (`interp.models.whisper`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from interp.core.errors import ModelLoadError

SUPPORTED_VERSIONS = (6,)
# CTranslate2's DataType enum -> numpy dtype. bfloat16 has no numpy dtype: read as raw uint16.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
BFLOAT16 = 5


@dataclass(frozen=True)
class CT2Model:
    """The content of one model.bin: spec name and revision, named arrays, aliases."""

    spec: str
    revision: int
    version: int
    arrays: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    bfloat16: frozenset[str] = frozenset()  # names stored as raw bfloat16 bits (uint16)

    def scalar(self, name: str) -> int | float:
        """A rank-0 option (``decoder/num_heads``) as a Python number."""
        arr = self[name]
        if arr.ndim != 0:
            raise KeyError(f"{name!r} is an array of shape {arr.shape}, not a scalar option")
        value: int | float = arr.item()
        return value

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.arrays:
            return self.arrays[name]
        raise KeyError(f"no variable {name!r} in this {self.spec} model.bin ({len(self.arrays)} variables)")

    def __contains__(self, name: str) -> bool:
        return name in self.arrays


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelLoadError(
                f"{self.path}: truncated CTranslate2 file (wanted {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)})"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        return int(struct.unpack("<" + fmt, self.take(size))[0])

    def string(self) -> str:
        n = self.u("H")
        raw = bytes(self.take(n))
        if not raw.endswith(b"\0"):
            raise ModelLoadError(f"{self.path}: malformed string at offset {self.pos - n} (no NUL)")
        return raw[:-1].decode("utf-8")


def read_ct2(path: str | Path) -> CT2Model:
    """Read every variable of a CTranslate2 ``model.bin`` into numpy arrays (native dtype)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"CTranslate2 model file not found: {path}")
    data = memoryview(path.read_bytes())
    r = _Reader(data, path)
    version = r.u("I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{path}: CTranslate2 binary layout version {version} is not supported; "
            f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    spec = r.string()
    revision = r.u("I")
    arrays: dict[str, np.ndarray] = {}
    bf16: set[str] = set()
    for _ in range(r.u("I")):
        name, code, arr = _read_variable(r, path)
        arrays[name] = arr
        if code == BFLOAT16:
            bf16.add(name)
    aliases = _read_aliases(r, arrays, path) if r.pos < len(data) else {}
    if r.pos != len(data):
        raise ModelLoadError(f"{path}: {len(data) - r.pos} trailing bytes after the aliases")
    return CT2Model(spec, revision, version, arrays, aliases, frozenset(bf16))


def _read_variable(r: _Reader, path: Path) -> tuple[str, int, np.ndarray]:
    """(name, dtype code, array) of the next variable."""
    name = r.string()
    shape = tuple(r.u("I") for _ in range(r.u("B")))
    code = r.u("B")
    if code not in DTYPES:
        raise ModelLoadError(f"{path}: variable {name!r} has unknown dtype code {code}")
    dtype = DTYPES[code]
    n_bytes = r.u("I")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n_bytes != expected:
        raise ModelLoadError(
            f"{path}: variable {name!r} of shape {shape} and dtype {dtype} should hold "
            f"{expected} bytes, the file says {n_bytes}"
        )
    # copy: the arrays must not keep the whole file's buffer alive or be read-only views
    return name, code, np.frombuffer(r.take(n_bytes), dtype=dtype).reshape(shape).copy()


def _read_aliases(r: _Reader, arrays: dict[str, np.ndarray], path: Path) -> dict[str, str]:
    """The alias table (alias -> variable); each alias is added to `arrays` too."""
    aliases: dict[str, str] = {}
    for _ in range(r.u("I")):
        alias, target = r.string(), r.string()
        if target not in arrays:
            raise ModelLoadError(f"{path}: alias {alias!r} points at unknown variable {target!r}")
        aliases[alias] = target
        arrays[alias] = arrays[target]
    return aliases


def to_float32(model: CT2Model, name: str) -> np.ndarray:
    """A variable as float32 (bfloat16 bits widened, float16 converted)."""
    arr = model[name]
    if name in model.bfloat16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)
