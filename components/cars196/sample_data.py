"""Generate small Cars196 archives in exactly the original layout.

The real Stanford files are no longer downloadable, and TFDS ships no fake
data, so tests and the demo use archives made here:

    cars_train.tgz                  cars_train/00001.jpg ...
    cars_test.tgz                   cars_test/00001.jpg ...
    car_devkit.tgz                  devkit/cars_train_annos.mat, cars_test_annos.mat, cars_meta.mat
    cars_test_annos_withlabels.mat  annotations: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname

Images are real JPEGs of varied sizes and aspect ratios (landscape, portrait,
some grayscale, one CMYK), drawn so that each class has its own look (body
colour, shape, stripes, wheels) with intra-class variation (position, scale,
colour jitter, background). Like the original, each class is split about
half/half between the TFDS train and test files. Output is byte-identical for
a seed (fixed tar/gzip metadata).
"""

from __future__ import annotations

import colorsys
import dataclasses
import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw, ImageFilter

ANNOTATION_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


@dataclasses.dataclass
class SampleSummary:
    """What was written: per TFDS split, the (fname, 1-based class) of every file."""
    out_dir: str
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    corrupt: list[str]  # "cars_train/00042.jpg" style names of the corrupt files

    @property
    def num_valid(self) -> int:
        return len(self.train) + len(self.test) - len(self.corrupt)


@dataclasses.dataclass(frozen=True)
class _ClassLook:
    hue: float
    body_aspect: float    # body width / height
    cabin_offset: float   # where the cabin sits along the body, 0..1
    stripes: int
    stripe_vertical: bool
    wheel_scale: float


def _class_look(class_id: int, num_classes: int, rng: np.random.Generator) -> _ClassLook:
    # Hues evenly spaced so classes differ by colour even before shape cues.
    return _ClassLook(
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


def _draw_car(look: _ClassLook, rng: np.random.Generator, width: int, height: int):
    """One image of a class: returns (PIL RGB image, 1-based inclusive bbox x1,y1,x2,y2)."""
    bg_top = _rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.3, 0.9))
    bg_bottom = _rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.7))
    ramp = np.linspace(0, 1, height)[:, None, None]
    background = (1 - ramp) * np.array(bg_top) + ramp * np.array(bg_bottom)
    background = background + rng.normal(0, 8, size=(height, width, 3))
    image = Image.fromarray(np.clip(np.broadcast_to(background, (height, width, 3)), 0, 255)
                            .astype(np.uint8))
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


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """Varied sizes: mostly landscape like real car photos, some portrait."""
    long_side = int(rng.integers(96, 240))
    short_side = int(long_side * rng.uniform(0.5, 0.9))
    return (short_side, long_side) if rng.uniform() < 0.2 else (long_side, short_side)


def _encode(image: Image.Image, mode: str, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    image.convert(mode).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def _annotations(records: list[tuple[str, int, tuple[int, int, int, int]]],
                 with_class: bool = True) -> np.ndarray:
    """A 1xN MATLAB struct array laid out like the Stanford devkit files.

    The field order matters: TFDS reads class as field 4 and fname as the last.
    The devkit's unlabeled cars_test_annos.mat has no class field.
    """
    fields = [f for f in ANNOTATION_FIELDS if with_class or f != "class"]
    struct = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, (fname, class_id, (x1, y1, x2, y2)) in enumerate(records):
        values = [np.array([[v]], np.uint16) for v in (x1, y1, x2, y2)]
        if with_class:
            values.append(np.array([[class_id]], np.uint8))
        struct[0, i] = tuple(values + [np.array([fname])])
    return struct


def _write_mat(path_or_buf, variables: dict) -> None:
    scipy.io.savemat(path_or_buf, variables, do_compression=False, oned_as="row")


def _mat_bytes(variables: dict) -> bytes:
    buf = io.BytesIO()
    _write_mat(buf, variables)
    # savemat stamps the creation time into the header: zero it for reproducibility.
    data = bytearray(buf.getvalue())
    header = bytes(data[:116]).split(b", Created on:")[0].ljust(116, b" ")
    data[:116] = header
    return bytes(data)


def _write_tgz(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A gzip'd tar with fixed metadata, written atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
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


def _corrupt_bytes(valid_jpeg: bytes, index: int) -> bytes:
    if index % 2 == 0:
        return valid_jpeg[: len(valid_jpeg) // 2]  # truncated JPEG: header intact, data cut
    return b"this is not an image\n" * 20          # a non-image file named .jpg


def make_sample_data(out_dir: str | os.PathLike, num_classes: int = 18,
                     images_per_class: int = 10, seed: int = 0, corrupt: int = 0,
                     progress=None) -> SampleSummary:
    """Write the four Cars196 files for ``num_classes`` classes into ``out_dir``.

    Each class gets ``images_per_class`` images, split half/half (odd counts
    favour train) between cars_train and cars_test. ``corrupt`` extra annotated
    files (alternately truncated JPEGs and non-image bytes) are added, half to
    each TFDS split. Classes use the first ``num_classes`` Cars196 class ids.
    """
    if not 1 <= num_classes <= 196:
        raise ValueError(f"--classes must be in [1, 196], got {num_classes}")
    if images_per_class < 2:
        raise ValueError(f"--images-per-class must be >= 2, got {images_per_class}")
    if corrupt < 0:
        raise ValueError(f"--corrupt must be >= 0, got {corrupt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    looks = {c: _class_look(c, num_classes, rng) for c in range(1, num_classes + 1)}

    files = {"train": [], "test": []}     # (fname, bytes)
    records = {"train": [], "test": []}   # (fname, class, bbox)
    for class_id in range(1, num_classes + 1):
        for i in range(images_per_class):
            split = "train" if i < (images_per_class + 1) // 2 else "test"
            width, height = _image_size(rng)
            image, bbox = _draw_car(looks[class_id], rng, width, height)
            roll = rng.uniform()
            mode = "L" if roll < 0.1 else "RGB"
            fname = f"{len(files[split]) + 1:05d}.jpg"
            files[split].append((fname, _encode(image, mode, rng)))
            records[split].append((fname, class_id, bbox))
        if progress:
            progress(class_id, num_classes)
    # One CMYK JPEG, as a few real Cars196 images are.
    fname, _ = files["train"][0]
    image = Image.open(io.BytesIO(files["train"][0][1])).convert("RGB")
    files["train"][0] = (fname, _encode(image, "CMYK", rng))

    corrupt_names = []
    for k in range(corrupt):
        split = "train" if k % 2 == 0 else "test"
        fname = f"{len(files[split]) + 1:05d}.jpg"
        files[split].append((fname, _corrupt_bytes(files[split][0][1], k)))
        records[split].append((fname, int(rng.integers(1, num_classes + 1)), (1, 1, 10, 10)))
        corrupt_names.append(f"cars_{split}/{fname}")

    _write_tgz(out / "cars_train.tgz", [(f"cars_train/{n}", b) for n, b in files["train"]])
    _write_tgz(out / "cars_test.tgz", [(f"cars_test/{n}", b) for n, b in files["test"]])
    from tensorflow_datasets.image_classification import cars196  # class names only
    class_names = np.array([[np.array([name]) for name in cars196._NAMES]], dtype=object)
    test_annos_unlabeled = _annotations(records["test"], with_class=False)
    _write_tgz(out / "car_devkit.tgz", [
        ("devkit/cars_train_annos.mat", _mat_bytes({"annotations": _annotations(records["train"])})),
        ("devkit/cars_test_annos.mat", _mat_bytes({"annotations": test_annos_unlabeled})),
        ("devkit/cars_meta.mat", _mat_bytes({"class_names": class_names})),
    ])
    tmp = out / "cars_test_annos_withlabels.mat.partial"
    tmp.write_bytes(_mat_bytes({"annotations": _annotations(records["test"])}))
    os.replace(tmp, out / "cars_test_annos_withlabels.mat")
    return SampleSummary(
        out_dir=str(out),
        train=[(f, c) for f, c, _ in records["train"]],
        test=[(f, c) for f, c, _ in records["test"]],
        corrupt=corrupt_names,
    )
