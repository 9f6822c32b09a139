"""Reading images and LFW-style pairs files without PyTorch.

Shared by the training data modules (:mod:`facexai.data.folders`) and the torch-free audit
(:mod:`facexai.export.audit`), so it imports only numpy and Pillow.

Both read files from outside (downloaded pairs lists, user images), so both refuse what could
hurt: a pairs line may not name a file outside the image root, and an image whose header
announces more than :data:`MAX_IMAGE_PIXELS` is refused before it is decoded.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: Largest image (width x height) any facexai reader decodes: 100 megapixels, about 300 MB as
#: RGB uint8 (Pillow holds another 400 MB while converting). That covers every camera's default
#: output (phones save 12-50 MP, full-frame and medium-format bodies up to 100 MP) and is close
#: to Pillow's own warning threshold (89.5 MP); a few bytes of PNG or JPEG can announce billions
#: of pixels, so larger files are refused with a message to downscale them. Read at call time,
#: so tests and unusual data sets can change it.
MAX_IMAGE_PIXELS = 100_000_000

#: What Pillow raises on malformed files besides OSError: its plugins parse headers with struct
#: and plain indexing, so each of these means "not a readable image", never a bug of the caller.
_PIL_FAILURES = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageFileError(ValueError):
    """An image is corrupt, unreadable or too large to decode; the message names the file."""


class PairsFileError(ValueError):
    """A pairs file is malformed or names images outside the image root; the message names the line."""


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths and whether they show the same person."""

    path_a: Path
    path_b: Path
    issame: bool


def read_pairs(
    pairs_file: str | Path, image_root: str | Path, check_files: bool = True, *, allow_outside_root: bool = False
) -> list[Pair]:
    """Parse an LFW-style pairs file.

    Accepted line forms (blank lines and ``#`` comments ignored):

    - an optional header ``n_folds n_pairs`` (LFW's 10-fold ``pairs.txt``) or ``n_pairs``;
    - ``name i j``: genuine pair ``root/name/name_000i.jpg`` and ``..._000j.jpg`` (LFW naming);
    - ``name1 i name2 j``: impostor pair in LFW naming;
    - ``path_a path_b issame``: explicit relative paths and 0/1.

    Args:
        pairs_file: The pairs file (UTF-8 text).
        image_root: Folder the names are relative to.
        check_files: Also check that every named image exists.
        allow_outside_root: Accept absolute paths and ``..``. Off by default: a downloaded pairs
            file could otherwise make a command read (and show in a report) any file on the machine.

    Raises:
        FileNotFoundError: the pairs file, or (with ``check_files``) images it names, are missing.
        PairsFileError: a malformed line or a path outside the root (with its line number), or no pairs.
    """
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"Pairs file not found: {pairs_file}")
    text = read_utf8_text(pairs_file, PairsFileError, f"Pairs file {pairs_file}")
    lines = [(n, ln.split()) for n, ln in enumerate(text.splitlines(), 1)]
    lines = [(n, tok) for n, tok in lines if tok and not tok[0].startswith("#")]
    if lines and all(_is_number(t) for t in lines[0][1]) and len(lines[0][1]) <= 2:
        lines = lines[1:]
    pairs = [_parse_pair(tokens, image_root, pairs_file, n, allow_outside_root) for n, tokens in lines]
    if not pairs:
        raise PairsFileError(f"Pairs file {pairs_file} contains no pairs")
    if check_files:
        _check_exist(pairs, pairs_file)
    return pairs


def read_utf8_text(path: Path, error: type[ValueError], subject: str | None = None) -> str:
    """The file's text, or ``error`` naming ``subject`` (default: the path) and the first bad byte.

    Files from outside (pairs lists, landmark files) are often saved in a legacy encoding; a
    one-line error of the reader's own type says so, where a bare UnicodeDecodeError would not
    name the file.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{subject or path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _is_number(token: str) -> bool:
    """ASCII digits only: ``'²'.isdigit()`` is true but ``int('²')`` fails; 9 digits bound image numbers."""
    return re.fullmatch(r"[0-9]{1,9}", token) is not None


def _check_exist(pairs: list[Pair], source: Path) -> None:
    missing = sorted({str(p) for pair in pairs for p in (pair.path_a, pair.path_b) if not os.path.isfile(p)})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"Pairs file {source} references {len(missing)} missing images: {shown}")


def _lfw_name(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def _parse_pair(tokens: list[str], root: Path, source: Path, line: int, allow_outside_root: bool) -> Pair:
    where = f"{source}:{line}"
    if len(tokens) == 3 and _is_number(tokens[1]) and _is_number(tokens[2]):
        names, issame = (_lfw_name(tokens[0], tokens[1]), _lfw_name(tokens[0], tokens[2])), True
    elif len(tokens) == 4 and _is_number(tokens[1]) and _is_number(tokens[3]):
        names, issame = (_lfw_name(tokens[0], tokens[1]), _lfw_name(tokens[2], tokens[3])), False
    elif len(tokens) == 3 and tokens[2] in ("0", "1"):
        names, issame = (tokens[0], tokens[1]), tokens[2] == "1"
    else:
        raise PairsFileError(
            f"Malformed pairs line {where}: {_shorten(' '.join(tokens))!r}; expected 'name i j', "
            "'name1 i name2 j' or 'path_a path_b 0|1'"
        )
    path_a, path_b = (_image_path(root, name, where, allow_outside_root) for name in names)
    return Pair(path_a, path_b, issame)


def _image_path(root: Path, name: str, where: str, allow_outside_root: bool) -> Path:
    """``root / name``, refusing names that leave the root (absolute, ``..``, Windows separators)."""
    if "\0" in name:
        raise PairsFileError(f"Malformed pairs line {where}: a path contains a NUL byte")
    pure = PurePosixPath(name.replace("\\", "/"))
    if not allow_outside_root and (pure.is_absolute() or ".." in pure.parts):
        raise PairsFileError(
            f"Pairs line {where}: {_shorten(name)} points outside the image root {root} (absolute path or "
            "'..'); use paths relative to the root, or read_pairs(..., allow_outside_root=True) for a trusted file"
        )
    return root / name


def _shorten(text: str, limit: int = 80) -> str:
    """A name from a hostile file, cut so it cannot flood the message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_pixel_count(width: int, height: int, source: str | os.PathLike) -> None:
    """Raise :class:`ImageFileError` if a header announces more than :data:`MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageFileError(
            f"{source}: {width}x{height} image has {width * height} pixels, above the limit of "
            f"{MAX_IMAGE_PIXELS} (facexai.files.MAX_IMAGE_PIXELS, against decompression bombs); downscale it"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an encoded image's header (nothing decoded); ``None`` if Pillow cannot tell.

    Raises:
        ImageFileError: If Pillow itself refuses the header as a decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as exc:
        raise _bomb_error("image header", exc) from None
    except _PIL_FAILURES:
        return None


def _bomb_error(source: str | os.PathLike, exc: Image.DecompressionBombError) -> ImageFileError:
    """Pillow refuses twice its own limit while opening, before the size is known to us: say so plainly."""
    return ImageFileError(
        f"{source}: {exc} (facexai refuses images above facexai.files.MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} "
        "pixels, against decompression bombs); downscale it"
    )


def png_chunks_fit(data: bytes) -> bool:
    """Whether every chunk of a PNG fits in ``data`` (``True`` for other formats).

    Decoders size their read buffer from a chunk's 4-byte length before reading it; OpenCV 5
    allocates a forged 4 GiB IDAT of a 900-byte file in full.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return True
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length  # length, type, body, CRC
        if pos > len(data):
            return False
        if kind == b"IEND":
            return True
    return False


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """An RGB uint8 HWC image, optionally resized to ``size`` x ``size``.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ImageFileError: Naming the file, if it is corrupt, unreadable or above :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    # Decoded from memory: a forged length then cannot make a read allocate more than the file
    # (a PNG chunk claiming 512 MiB made Pillow's buffered file read allocate all of it).
    data = path.read_bytes()
    if not png_chunks_fit(data):
        raise ImageFileError(f"Corrupt image file {path}: a PNG chunk runs past the end of the file")
    try:
        # Our limit applies below; Pillow's warning (and its error at 2x its limit) would only
        # duplicate it as a traceback or a stray warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                check_pixel_count(width, height, path)
                return _to_rgb_array(img, size)
    except ImageFileError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, exc) from None
    except _PIL_FAILURES as err:
        raise ImageFileError(f"Corrupt or unreadable image file {path}: {type(err).__name__}: {err}") from None


def _to_rgb_array(img: Image.Image, size: int | None) -> np.ndarray:
    """Decode, convert to RGB and resize."""
    img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()
