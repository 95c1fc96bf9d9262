"""Decode untrusted image bytes into RGB arrays, refusing what is broken, huge or ambiguous.

Every input goes through `decode_image`, which either returns an (H, W, 3) uint8 RGB array or
raises ImageError with a stable `.reason` code (the ingest error table stores it) - nothing else
escapes it. The checks run cheapest first and before the expensive step they protect:

1. size in bytes, before parsing;
2. the format, from the file's signature; only the parsers of accepted formats (plus GIF, to say
   "animated") ever see the bytes;
3. pixel count and minimum side, from the header, before decoding (decompression bombs);
4. animation (more than one frame): refused, because which frame holds "the face" is ambiguous;
   extract a frame first. A single-frame GIF is an unsupported format, not an animation;
5. decoding, with PIL's default of refusing truncated data (ImageFile.LOAD_TRUNCATED_IMAGES must
   stay False in the process; code that sets it True disables the "truncated" check);
6. EXIF orientation applied, so arrays are upright as a viewer shows them;
7. colour mode normalised to 8-bit RGB. Transparent pixels are composited over WHITE (how
   browsers and viewers show transparent PNGs). 16-bit samples are rounded to 8 bits
   (v * 255 / 65535). CMYK is converted with PIL's plain formula; embedded ICC profiles are not
   applied.

PIL's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS, about 89 M pixels) still applies on
top of ImageLimits.max_pixels; when it fires it is reported as "too_many_pixels" too.

Decoded square crops change size in one place, `resize_square` / `resize_square_batch`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Stable reason codes (stored in error tables; never rename one).
REASONS = frozenset(
    {
        "empty",
        "too_many_bytes",
        "not_an_image",
        "unsupported_format",
        "truncated",
        "corrupt",
        "too_many_pixels",
        "too_small",
        "animated",
        "unsupported_mode",
    }
)

_WHAT_TO_DO = {
    "empty": "the file has no bytes; re-export or re-download it",
    "too_many_bytes": "re-encode it smaller (JPEG quality 90 is plenty) or raise ImageLimits.max_bytes",
    "not_an_image": "it is not an image file; remove it from the input folder",
    "unsupported_format": "convert it to JPEG, PNG or WebP",
    "truncated": "the file ends early (interrupted download or copy); fetch it again",
    "corrupt": "the image data is damaged; re-export or re-download it",
    "too_many_pixels": "downscale it or raise ImageLimits.max_pixels",
    "too_small": "use a larger image; faces need more pixels than this",
    "animated": "extract one frame and save it as PNG or JPEG",
    "unsupported_mode": "convert it to 8-bit RGB",
}

# File signatures, so a refused format is named rather than called "not an image" (PIL format names).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_ISO_BMFF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF", b"heif": "HEIF"}


class ImageError(ValueError):
    """An input image was refused; `.reason` is a stable code from REASONS, `.source` its name."""

    def __init__(self, reason: str, source: str, detail: str) -> None:
        self.reason = reason
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {detail} [{reason}]; {_WHAT_TO_DO.get(reason, 'check the file')}")

    def __reduce__(self):  # keep reason/source when pickled across Ray processes
        return (type(self), (self.reason, self.source, self.detail))


@dataclass(frozen=True)
class ImageLimits:
    """What decode_image accepts."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")  # PIL format names


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return _ISO_BMFF_BRANDS.get(data[8:12])
    return None


def _open(data: bytes, source: str, limits: ImageLimits) -> ImageFile.ImageFile:
    """Parse the header only (PIL decodes lazily)."""
    try:
        # GIF is opened too, only so an animated GIF is reported as "animated".
        return Image.open(io.BytesIO(data), formats=list(limits.formats) + ["GIF"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_many_pixels", source, f"PIL's decompression-bomb guard refused it ({e})") from None
    except UnidentifiedImageError:
        sniffed = _sniff_format(data)
        if sniffed in limits.formats:  # right signature, but PIL cannot parse the header
            raise ImageError("corrupt", source, f"{sniffed} signature but an unreadable header") from None
        if sniffed:
            raise ImageError("unsupported_format", source, f"{sniffed} images are not accepted") from None
        raise ImageError("not_an_image", source, f"{len(data)} bytes that are not a JPEG, PNG or WebP image") from None
    except Exception as e:  # a header that starts right but breaks: PIL raises many types here
        raise _broken(source, e) from None


def _broken(source: str, e: BaseException) -> ImageError:
    text = str(e).lower()
    if "truncated" in text or "broken data stream" in text or isinstance(e, EOFError):
        return ImageError("truncated", source, f"image data ends early ({e})")
    return ImageError("corrupt", source, f"cannot decode ({type(e).__name__}: {e})")


def _to_rgb(img: Image.Image, source: str) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG); "I" holds it as int32 in some PIL versions: same 0..65535 range.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)  # (H, W)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in img.info)
        or (mode in ("L", "RGB") and "transparency" in img.info)
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise ImageError("unsupported_mode", source, f"colour mode {mode!r} is not supported")


def decode_image(data: bytes, *, source: str = "<bytes>", limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Validate and decode image bytes -> (H, W, 3) uint8 RGB, upright (EXIF applied).

    Raises ImageError (reason in REASONS) for anything it refuses; never anything else for bad
    bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{source}: decode_image takes bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("empty", source, "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError("too_many_bytes", source, f"{len(data)} bytes, the limit is {limits.max_bytes}")
    img = _open(data, source, limits)
    try:
        width, height = img.size
        fmt = img.format or "unknown"
        if width * height > limits.max_pixels:
            raise ImageError(
                "too_many_pixels",
                source,
                f"{width}x{height} = {width * height} pixels, the limit is {limits.max_pixels}",
            )
        if getattr(img, "n_frames", 1) > 1:
            raise ImageError("animated", source, f"animated {fmt} with {img.n_frames} frames")
        if fmt not in limits.formats:
            raise ImageError("unsupported_format", source, f"{fmt} images are not accepted")
        if min(width, height) < limits.min_side:
            raise ImageError(
                "too_small", source, f"{width}x{height}, each side needs at least {limits.min_side} pixels"
            )
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError("too_many_pixels", source, f"PIL's decompression-bomb guard refused it ({e})") from None
        except Exception as e:
            raise _broken(source, e) from None
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:
            # Unparseable EXIF says nothing reliable about orientation: keep the stored one.
            upright = img
        try:
            rgb = _to_rgb(upright if upright is not None else img, source)
        except ImageError:
            raise
        except Exception as e:
            raise ImageError("unsupported_mode", source, f"cannot convert mode {img.mode!r} to RGB ({e})") from None
        return np.ascontiguousarray(rgb)  # (H, W, 3) uint8
    except ImageError:
        raise
    except Exception as e:  # last line of defence: a PIL bug must become a refusal, not a crash
        raise ImageError("corrupt", source, f"unexpected decoder failure ({type(e).__name__}: {e})") from None
    finally:
        img.close()


def encode_png(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """(H, W) grey/mask or (H, W, 3) RGB uint8 -> PNG bytes (lossless).

    Level 1 is the default because crops are written once per face at ingest, where speed
    matters more than the few percent higher compression of level 6.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got {arr.dtype}; scale to 0..255 and cast first")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_png needs (H, W) or (H, W, 3), got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes, *, source: str = "<png>") -> np.ndarray:
    """PNG bytes written by encode_png -> (H, W) uint8 for grey/masks or (H, W, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            img.load()
            if img.mode == "L":
                return np.array(img, dtype=np.uint8)  # (H, W)
            if img.mode == "RGB":
                return np.array(img, dtype=np.uint8)  # (H, W, 3)
            mode = img.mode
    except UnidentifiedImageError:
        raise ImageError("not_an_image", source, "not PNG data") from None
    except Exception as e:
        raise _broken(source, e) from None
    raise ImageError("unsupported_mode", source, f"PNG mode {mode!r}; table images are L or RGB")


def resize_square(image: np.ndarray, size: int, *, enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A square (S, S) or (S, S, C) image -> (size, size) or (size, size, C), same dtype.

    INTER_AREA when shrinking (averaging avoids aliasing); `enlarge`, a cv2.INTER_* flag, when
    enlarging (callers differ: crops for encoders use INTER_LINEAR, the page's aligned faces
    INTER_CUBIC, judges and table crops INTER_AREA). The image itself, not a copy, when it is
    already size x size. A non-square image is stretched to the square; its height decides
    shrink or enlarge."""
    if image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else enlarge
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_square_batch(images: np.ndarray, size: int, *, enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """(B, S, S) or (B, S, S, C) -> (B, size, size[, C]), each image as resize_square; the batch
    itself when S == size."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([resize_square(im, size, enlarge=enlarge) for im in images])
