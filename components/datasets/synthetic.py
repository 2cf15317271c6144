"""Synthetic images and archive writers shared by the sample-data generators.

Every dataset's sample generator (``components/datasets/<name>/sample.py``) draws its
images here: a class has its own look (colour, shape, stripes, wheels) with intra-class
variation (position, scale, colour jitter, background), so that retrieval on the samples
is learnable. Archives are written with fixed metadata (byte-identical for a seed) and
atomically (temp file + rename).
"""

from __future__ import annotations

import colorsys
import dataclasses
import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclasses.dataclass(frozen=True)
class ClassLook:
    hue: float
    body_aspect: float    # body width / height
    cabin_offset: float   # where the cabin sits along the body, 0..1
    stripes: int
    stripe_vertical: bool
    wheel_scale: float


def class_look(class_id: int, num_classes: int, rng: np.random.Generator) -> ClassLook:
    # Hues evenly spaced so classes differ by colour even before shape cues.
    return ClassLook(
        hue=(class_id - 1) / max(num_classes, 1),
        body_aspect=float(rng.uniform(1.8, 3.2)),
        cabin_offset=float(rng.uniform(0.2, 0.6)),
        stripes=int(rng.integers(0, 4)),
        stripe_vertical=bool(rng.integers(0, 2)),
        wheel_scale=float(rng.uniform(0.18, 0.32)),
    )


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(sat, 0), 1), min(max(val, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_object(look: ClassLook, rng: np.random.Generator, width: int, height: int,
                texture: np.ndarray | None = None):
    """One image of a class: returns (PIL RGB image, 1-based inclusive bbox x1,y1,x2,y2).

    ``texture`` (from ``texture_tile``): the background's noise is a random window of it
    instead of fresh per-pixel noise: a 700 x 470 image draws in 16 ms instead of 29.
    """
    bg_top = _rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.3, 0.9))
    bg_bottom = _rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.7))
    if texture is None:
        ramp = np.linspace(0, 1, height)[:, None, None]
        background = (1 - ramp) * np.array(bg_top) + ramp * np.array(bg_bottom)
        background = background + rng.normal(0, 8, size=(height, width, 3))
        image = Image.fromarray(np.clip(np.broadcast_to(background, (height, width, 3)), 0, 255)
                                .astype(np.uint8))
    else:
        image = Image.fromarray(_textured_background(texture, rng, width, height, bg_top,
                                                     bg_bottom))
    draw = ImageDraw.Draw(image)

    scale = rng.uniform(0.45, 0.85)
    body_w = max(8, int(min(width, height * look.body_aspect) * scale))
    body_h = max(4, int(body_w / look.body_aspect))
    cabin_h = max(3, int(body_h * 0.6))
    wheel_r = max(2, int(body_h * look.wheel_scale * 1.5))
    total_h = cabin_h + body_h + wheel_r
    x1 = int(rng.integers(0, max(1, width - body_w)))
    y1 = int(rng.integers(0, max(1, height - total_h)))
    body_top = y1 + cabin_h

    jitter = rng.normal(0, 0.02)
    body = _rgb(look.hue + jitter, 0.85 + rng.normal(0, 0.05), 0.85 + rng.normal(0, 0.08))
    dark = _rgb(look.hue + jitter, 0.6, 0.35)
    cabin_x = x1 + int(body_w * look.cabin_offset * 0.6)
    cabin_w = int(body_w * 0.45)
    draw.rectangle([cabin_x, y1, cabin_x + cabin_w, body_top], fill=dark)
    draw.rectangle([cabin_x + 2, y1 + 2, cabin_x + cabin_w - 2, body_top - 1],
                   fill=_rgb(0.55, 0.2, 0.9))  # windows
    draw.rounded_rectangle([x1, body_top, x1 + body_w, body_top + body_h],
                           radius=max(1, body_h // 4), fill=body)
    for s in range(look.stripes):
        if look.stripe_vertical:
            sx = x1 + (s + 1) * body_w // (look.stripes + 1)
            draw.line([sx, body_top, sx, body_top + body_h], fill=dark, width=max(1, body_w // 30))
        else:
            sy = body_top + (s + 1) * body_h // (look.stripes + 1)
            draw.line([x1, sy, x1 + body_w, sy], fill=dark, width=max(1, body_h // 10))
    wheel_y = body_top + body_h
    for wx in (x1 + body_w // 5, x1 + 4 * body_w // 5):
        draw.ellipse([wx - wheel_r, wheel_y - wheel_r, wx + wheel_r, wheel_y + wheel_r],
                     fill=(20, 20, 20))
    if rng.uniform() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    # MATLAB-style 1-based inclusive pixel coordinates, clipped to the image.
    bbox = (max(1, x1 + 1), max(1, y1 + 1),
            min(width, x1 + body_w + 1), min(height, wheel_y + wheel_r + 1))
    return image, bbox


def _textured_background(texture: np.ndarray, rng: np.random.Generator, width: int,
                         height: int, top, bottom) -> np.ndarray:
    """uint8 [height, width, 3]: a vertical colour ramp plus a random (possibly flipped)
    window of the texture."""
    tile_h, tile_w = texture.shape[:2]
    if width > tile_w or height > tile_h:
        reps = (-(-height // tile_h), -(-width // tile_w), 1)
        texture = np.tile(texture, reps)
        tile_h, tile_w = texture.shape[:2]
    y0 = int(rng.integers(0, tile_h - height + 1))
    x0 = int(rng.integers(0, tile_w - width + 1))
    window = texture[y0:y0 + height, x0:x0 + width]
    if rng.uniform() < 0.5:
        window = window[:, ::-1]
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    rows = ((1 - ramp) * np.asarray(top, np.float32) + ramp * np.asarray(bottom, np.float32))
    background = rows.astype(np.int16)[:, None, :] + window
    return np.clip(background, 0, 255).astype(np.uint8)


def texture_tile(rng: np.random.Generator, side: int = 1024, sigma: float = 18.0,
                 blur: float = 0.7) -> np.ndarray:
    """int16 [side, side, 3] zero-mean, slightly blurred noise: the grain and texture of a
    photo's background, so that JPEG sizes and decode costs are a photo's (about 55 KB
    at 700 x 470 px)."""
    noise = rng.normal(0, sigma, size=(side, side, 3)).astype(np.float32)
    grain = Image.fromarray(np.clip(noise + 128, 0, 255).astype(np.uint8))
    if blur:
        grain = grain.filter(ImageFilter.GaussianBlur(radius=blur))
    return np.asarray(grain).astype(np.int16) - 128


# Real-photo sizes (the Cars196 distribution, roughly): long side several hundred to
# about a thousand pixels, most photos landscape between 4:3 and 16:9.
REAL_LONG_SIDE = (400, 1000)
REAL_LONG_SIDE_MEDIAN = 700


def image_size(rng: np.random.Generator, real_size: bool = False) -> tuple[int, int]:
    """(width, height). Small (default): long side 96-240 px, mostly landscape, some
    portrait (20%), so tests and the demo are fast.

    ``real_size``: real-photo sizes like Cars196's: the long side log-normal around
    700 px within 400-1,000 px; 90% landscape with an aspect ratio between 4:3 and
    16:9, 5% wider (up to 2:1), 5% portrait (3:4 to 9:16).
    """
    if not real_size:
        long_side = int(rng.integers(96, 240))
        short_side = int(long_side * rng.uniform(0.5, 0.9))
        return (short_side, long_side) if rng.uniform() < 0.2 else (long_side, short_side)
    low, high = REAL_LONG_SIDE
    long_side = int(np.clip(rng.lognormal(np.log(REAL_LONG_SIDE_MEDIAN), 0.22), low, high))
    roll = rng.uniform()
    aspect = rng.uniform(16 / 9, 2.0) if 0.90 <= roll < 0.95 else rng.uniform(4 / 3, 16 / 9)
    short_side = int(round(long_side / aspect))
    return (short_side, long_side) if roll >= 0.95 else (long_side, short_side)


def encode(image: Image.Image, mode: str, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    image.convert(mode).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def write_tgz(path: Path, members: list[tuple[str, bytes]], level: int = 9) -> None:
    """A gzip'd tar with fixed metadata, written atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="",
                                               compresslevel=level) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            directories = sorted({os.path.dirname(name) for name, _ in members} - {""})
            for directory in directories:
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A zip with fixed timestamps (stored, not deflated: JPEGs do not compress), written
    atomically. Directory entries are added as zip tools write them."""
    tmp = path.with_suffix(path.suffix + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        directories = set()
        for name, _ in members:
            parts = name.split("/")[:-1]
            directories.update("/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1))
        for directory in sorted(directories):
            archive.writestr(zipfile.ZipInfo(directory, date_time=(1980, 1, 1, 0, 0, 0)), b"")
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    os.replace(tmp, path)


def corrupt_bytes(valid_jpeg: bytes, index: int) -> bytes:
    if index % 2 == 0:
        return valid_jpeg[: len(valid_jpeg) // 2]  # truncated JPEG: header intact, data cut
    return b"this is not an image\n" * 20          # a non-image file named .jpg
