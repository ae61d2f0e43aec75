"""Write small, real test images (good and deliberately broken) and ZIP archives into a folder.

Plain functions, no fixtures, so any test file can use them: each writes ``path`` and returns it.
The format follows the extension unless ``fmt`` is given. Everything is a few KB and written in
milliseconds.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
# The colour classes many tests train on: a small net learns them in an epoch or two.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
EXIF_ORIENTATION = 0x0112


# --- good images ---------------------------------------------------------------------------------


def write_rgb(
    path: str | Path,
    size: tuple[int, int] = (32, 32),
    color: tuple[int, int, int] = (200, 30, 30),
    fmt: str | None = None,
    seed: int = 0,
) -> Path:
    """An RGB picture around ``color``: a horizontal gradient plus a rectangle placed by ``seed``."""
    return _save(Image.fromarray(_pattern(size, color, seed)), path, fmt)


def write_colour_classes(
    root: str | Path,
    per_class: int,
    size: tuple[int, int] = (12, 12),
    *,
    labels: tuple[str, ...] = tuple(COLOURS),
    seed: int = 0,
) -> Path:
    """``root/<colour>/<i>.png`` (``i`` from 0) for each of ``labels`` (names of :data:`COLOURS`): a folder-per-class
    dataset of textured colours. The one writer of the colour classes; image ``i`` is drawn with seed ``seed + i``."""
    for label in labels:
        for i in range(per_class):
            write_rgb(Path(root) / label / f"{i}.png", size=size, color=COLOURS[label], seed=seed + i)
    return Path(root)


def write_small_colour_set(root: str | Path) -> Path:
    """The small set of issue 24: 3 colour classes x 30 textured images of 96 px (60 training images in the default
    split), on which the recipe before the small-data rules ran away. The one writer of it: the recipe's tests and
    ``bench.bench_guard`` call it."""
    return write_colour_classes(root, 30, size=(96, 96), labels=("red", "green", "blue"))


def write_gray(path: str | Path, size: tuple[int, int] = (32, 32), level: int = 128, seed: int = 0) -> Path:
    """An 8-bit grayscale (mode L) picture around ``level``, different for each ``seed``."""
    rgb = _pattern(size, (level, level, level), seed)
    return _save(Image.fromarray(rgb[:, :, 0]), path)


def write_16bit_png(path: str | Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A mode I;16 image holding a ramp over the full 0..65535 range (PNG or TIFF by extension)."""
    width, height = size
    ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
    return _save(Image.fromarray(ramp), path)


def write_cmyk_jpeg(path: str | Path, size: tuple[int, int] = (32, 32), cmyk=(0, 255, 255, 0)) -> Path:
    """A plain CMYK JPEG; the default ink is pure red."""
    return _save(Image.new("CMYK", size, cmyk), path, "JPEG")


def write_palette_transparent_png(path: str | Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A P-mode PNG: left half palette index 0 (red, marked transparent), right half index 1 (blue)."""
    width, height = size
    im = Image.new("P", size, 1)
    im.putpalette([*RED, *BLUE])
    im.paste(0, (0, 0, width // 2, height))
    return _save(im, path, "PNG", transparency=0)


def write_rgba_png(path: str | Path, size: tuple[int, int] = (32, 32)) -> Path:
    """An RGBA PNG: left half fully transparent red, right half opaque blue."""
    width, height = size
    im = Image.new("RGBA", size, (*BLUE, 255))
    im.paste((*RED, 0), (0, 0, width // 2, height))
    return _save(im, path, "PNG")


def write_la_png(path: str | Path, size: tuple[int, int] = (32, 32)) -> Path:
    """An LA PNG: left half fully transparent black, right half opaque black."""
    width, height = size
    im = Image.new("LA", size, (0, 255))
    im.paste((0, 0), (0, 0, width // 2, height))
    return _save(im, path, "PNG")


def write_animated_gif(path: str | Path, size: tuple[int, int] = (16, 16), colors=(RED, GREEN, BLUE)) -> Path:
    """An animated GIF with one plain frame per colour (frame 0 is the first colour)."""
    frames = [Image.new("RGB", size, color) for color in colors]
    return _save(frames[0], path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def write_exif_rotated_jpeg(path: str | Path, size: tuple[int, int] = (60, 20), orientation: int = 6) -> Path:
    """A JPEG stored ``size`` wide, red on its left third and blue elsewhere, with an EXIF orientation.

    With orientation 6 a viewer rotates it 90 degrees clockwise: it shows tall, with red on top.
    """
    width, height = size
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, width // 3, height))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return _save(im, path, "JPEG", exif=exif, quality=95)


def write_mpo_jpeg(path: str | Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A multi-picture JPEG (as phones and 3-D cameras write): a red picture, then a blue one."""
    frames = [Image.new("RGB", size, RED), Image.new("RGB", size, BLUE)]
    return _save(frames[0], path, "MPO", save_all=True, append_images=frames[1:])


# --- broken or hostile files ---------------------------------------------------------------------


def write_truncated_jpeg(path: str | Path, size: tuple[int, int] = (128, 128)) -> Path:
    """A real noisy JPEG cut in half: its header is fine and ``verify()`` passes, decoding fails."""
    return _write_bytes(path, _half(_encoded(_noise(size), "JPEG", quality=90)))


def write_truncated_png(path: str | Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A real noisy PNG cut in half."""
    return _write_bytes(path, _half(_encoded(_noise(size), "PNG")))


def write_empty(path: str | Path) -> Path:
    """A zero-byte file."""
    return _write_bytes(path, b"")


def write_text_as_image(path: str | Path, text: str = "hello, I am not an image\n") -> Path:
    """A text file, whatever image extension ``path`` has."""
    return _write_bytes(path, text.encode())


def write_bomb_png(path: str | Path, size: tuple[int, int] = (30000, 30000)) -> Path:
    """A 70-byte PNG whose header claims ``size`` pixels (its pixel data is for a 1x1 image).

    Anything that decodes it before checking the header size would try to allocate ``size`` pixels.
    """
    data = bytearray(_encoded(Image.new("L", (1, 1)), "PNG"))
    # IHDR is the first chunk: length at 8, type at 12, width and height at 16 and 20, CRC at 29.
    struct.pack_into(">II", data, 16, *size)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return _write_bytes(path, bytes(data))


def write_ico(path: str | Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A real Windows icon (a format Pillow reads but the allowlist refuses), whatever ``path`` is named."""
    return _save(Image.new("RGB", size, RED), path, "ICO")


# --- ZIP archives --------------------------------------------------------------------------------


def zip_bytes(
    members: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A ZIP holding ``members`` (name -> content) and Unix symlinks (name -> target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix: external_attr holds st_mode in its high 16 bits
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def write_zip(zip_path: str | Path, members: dict[str, bytes], **kwargs) -> Path:
    """Write ``zip_bytes(members, **kwargs)`` to ``zip_path``."""
    return _write_bytes(zip_path, zip_bytes(members, **kwargs))


def folder_members(root: str | Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (symlinks left out), named as a ZIP made of the folder would name it:
    relative to ``root``'s parent, so ``root``'s own name wraps everything (``whales/train.csv``)."""
    root = Path(root)
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())
    return {p.relative_to(root.parent).as_posix(): p.read_bytes() for p in files}


def zip_bomb_bytes(name: str = "bomb.png", size: int = 16 * 2**20) -> bytes:
    """A ZIP whose one member is ``size`` zero bytes, deflated about 1000 times smaller."""
    return zip_bytes({name: bytes(size)})


def understated_size_zip_bytes(name: str = "big.png", real_size: int = 4 * 2**20, declared: int = 1000) -> bytes:
    """A ZIP whose headers say the member holds ``declared`` bytes while its data inflates to ``real_size``."""
    data = bytearray(zip_bytes({name: bytes(real_size)}))
    central = central_entries(bytes(data))[0]
    struct.pack_into("<L", data, central + 24, declared)  # central directory: uncompressed size
    struct.pack_into("<L", data, 22, declared)  # local header of the first member, at offset 0
    return bytes(data)


def encrypted_flag_zip_bytes(name: str = "secret.png", content: bytes = b"x" * 100) -> bytes:
    """A ZIP whose member is marked as encrypted (general purpose flag bit 0)."""
    data = bytearray(zip_bytes({name: content}))
    central = central_entries(bytes(data))[0]
    struct.pack_into("<H", data, central + 8, 0x1)
    struct.pack_into("<H", data, 6, 0x1)
    return bytes(data)


def overlapping_zip_bytes(outer: str = "a.png", inner: str = "b.png", payload: bytes = bytes(2**16)) -> bytes:
    """A ZIP with two entries, the second's local header lying *inside* the first one's data.

    This is the building block of "quoted overlap" zip bombs (CVE-2024-0450): Python 3.11.7's zipfile
    reads both members without complaint.
    """
    inner_zip = zip_bytes({inner: payload})
    inner_start = _start_dir(inner_zip)
    # The outer member is stored (not compressed) and its data is the inner member's header + data.
    outer_zip = zip_bytes({outer: inner_zip[:inner_start]}, compression=zipfile.ZIP_STORED)
    outer_start = _start_dir(outer_zip)
    name_len, extra_len = struct.unpack_from("<HH", outer_zip, 26)
    inner_entry = bytearray(inner_zip[inner_start : inner_zip.rfind(b"PK\x05\x06")])
    struct.pack_into("<L", inner_entry, 42, 30 + name_len + extra_len)  # point into the outer data
    central = outer_zip[outer_start : outer_zip.rfind(b"PK\x05\x06")] + bytes(inner_entry)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, len(central), outer_start, 0)
    return outer_zip[:outer_start] + central + end


# --- helpers -------------------------------------------------------------------------------------


def _pattern(size: tuple[int, int], color: tuple[int, int, int], seed: int) -> np.ndarray:
    """An HxWx3 uint8 array: ``color`` with a horizontal gradient and a seed-placed rectangle."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-40, 40, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(np.asarray(color, np.float32)[None, None, :] + ramp, (height, width, 3))
    pixels = np.clip(base, 0, 255).astype(np.uint8)
    x0, y0 = int(rng.integers(0, width // 2 + 1)), int(rng.integers(0, height // 2 + 1))
    pixels[y0 : y0 + height // 3 + 1, x0 : x0 + width // 3 + 1] = rng.integers(0, 256, 3, dtype=np.uint8)
    return pixels


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random RGB pixels: they compress badly, so the file is large enough to cut meaningfully."""
    width, height = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _encoded(im: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _save(im: Image.Image, path: str | Path, fmt: str | None = None, **params) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **params)
    return path


def _write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _start_dir(data: bytes) -> int:
    """Offset of the central directory (the archive is read by zipfile itself)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.start_dir


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory entries, walked by their declared lengths (to patch headers)."""
    offsets, position, end = [], _start_dir(data), data.rfind(b"PK\x05\x06")
    while position < end:
        offsets.append(position)
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, position + 28)
        position += 46 + name_len + extra_len + comment_len
    return offsets


# --- photo-like pictures and their copies (duplicate search, quality checks) -------------------------------


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A photo-like RGB picture, different for every ``seed``.

    A two-colour gradient at a random angle, a smooth noise texture at a random scale, a few random ellipses,
    polygons and lines, a light blur and fine sensor noise: enough structure that perceptual hashes spread out,
    as they do for real photos.
    """
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng([7919, seed])
    width, height = size
    pixels = _gradient(rng, width, height) + _smooth_texture(rng, width, height)
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        points = [(float(rng.uniform(-0.1, 1.1) * width), float(rng.uniform(-0.1, 1.1) * height)) for _ in range(4)]
        shape = int(rng.integers(3))
        if shape == 0:
            xs, ys = sorted(p[0] for p in points[:2]), sorted(p[1] for p in points[:2])
            draw.ellipse([xs[0], ys[0], xs[1] + 4, ys[1] + 4], fill=colour)
        elif shape == 1:
            draw.polygon(points[:3], fill=colour)
        else:
            draw.line(points, fill=colour, width=int(rng.integers(1, max(2, width // 12))))
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    noise = rng.normal(0, float(rng.uniform(1, 6)), (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8))


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs / width * np.cos(angle) + ys / height * np.sin(angle)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3))
    return c0 + (c1 - c0) * ramp[..., None]


def _smooth_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0, rng.uniform(15, 45), (cells, cells, 3)).astype(np.float32)
    channels = [Image.fromarray(coarse[..., c]).resize((width, height), Image.Resampling.BICUBIC) for c in range(3)]
    return np.stack([np.asarray(ch) for ch in channels], axis=-1)


def write_photo(path: str | Path, seed: int, size: tuple[int, int] = (96, 72), quality: int = 92) -> Path:
    """``photo(seed, size)`` saved by extension (JPEG at ``quality``)."""
    params = {"quality": quality} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    return _save(photo(seed, size), path, **params)


def write_copy(
    source: str | Path,
    path: str | Path,
    *,
    scale: float = 1.0,
    brightness: float = 1.0,
    blur: float = 0.0,
    quality: int = 85,
) -> Path:
    """A copy of ``source`` resized by ``scale``, brightened by ``brightness`` (1.15 = +15%), blurred, and saved
    by ``path``'s extension (a JPEG at ``quality``): the kinds of near duplicate a dataset collects."""
    from PIL import ImageEnhance, ImageFilter

    im = Image.open(source).convert("RGB")
    if scale != 1.0:
        im = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.Resampling.LANCZOS)
    if brightness != 1.0:
        im = ImageEnhance.Brightness(im).enhance(brightness)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    params = {"quality": quality} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    return _save(im, path, **params)


def write_flat(path: str | Path, color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    """A picture of one colour (every flat picture gets the same perceptual hash)."""
    return _save(Image.new("RGB", size, color), path)
