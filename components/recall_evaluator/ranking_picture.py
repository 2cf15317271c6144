"""Retrieval picture: each row a query image, then its nearest neighbours.

Neighbours of the query's class are framed green, the others red (the query
itself is framed blue). PIL only, no matplotlib. Optionally an HTML page
shows the picture plus a table of ids, distances and match flags.
"""

from __future__ import annotations

import html
import io
import os
import urllib.parse
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_NEIGHBOURS = 8

# Layout, in pixels (see picture_size).
FRAME = 4          # coloured border around each thumbnail
GAP = 6            # between cells, and the outer margin
SEPARATOR = 18     # extra space between the query column and the neighbours
HEADER = 16        # row of column labels ("query", "1", "2", ...)

BACKGROUND = (255, 255, 255)
PAD_COLOUR = (230, 230, 230)
QUERY_COLOUR = (30, 90, 200)
MATCH_COLOUR = (0, 170, 0)
MISS_COLOUR = (220, 0, 0)
TEXT_COLOUR = (40, 40, 40)


def picture_size(num_queries: int, num_neighbours: int,
                 thumb_size: int = 128) -> Tuple[int, int]:
    """(width, height) in pixels of the PNG for Q rows of 1 + K cells."""
    cell = thumb_size + 2 * FRAME
    width = 2 * GAP + SEPARATOR + (num_neighbours + 1) * cell + num_neighbours * GAP
    height = 2 * GAP + HEADER + num_queries * cell + (num_queries - 1) * GAP
    return width, height


def _to_pil(image, what: str) -> Image.Image:
    """uint8 [H, W, 3] (also [H, W], [H, W, 1], [H, W, 4]) -> RGB PIL image."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) \
            or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be an [H, W, 3] image, got shape {arr.shape}")
    return Image.fromarray(arr).convert("RGB")


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    """Fits the image into size x size (aspect kept, up- or down-scaled), padded."""
    w, h = image.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), PAD_COLOUR)
    canvas.paste(image, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def _framed(image: Image.Image, colour) -> Image.Image:
    w, h = image.size
    cell = Image.new("RGB", (w + 2 * FRAME, h + 2 * FRAME), colour)
    cell.paste(image, (FRAME, FRAME))
    return cell


def _table_value(values, i: int, j: Optional[int] = None):
    if values is None:
        return None
    row = values[i]
    return row if j is None else row[j]


def _write_html(out_html: str, out_png: str, matches: np.ndarray, titles: Mapping) -> None:
    query_ids = titles.get("query_ids")
    neighbour_ids = titles.get("neighbour_ids")
    distances = titles.get("distances")
    caption = str(titles.get("caption", "Retrieval results"))
    src = os.path.relpath(os.path.abspath(out_png),
                          os.path.dirname(os.path.abspath(out_html)))
    src = urllib.parse.quote(src.replace(os.sep, "/"))
    esc = html.escape
    num_q, num_k = matches.shape

    head = "".join(f"<th>{j + 1}</th>" for j in range(num_k))
    rows = []
    for i in range(num_q):
        qid = _table_value(query_ids, i)
        cells = [f"<td>{esc(str(i if qid is None else qid))}</td>"]
        for j in range(num_k):
            nid = _table_value(neighbour_ids, i, j)
            dist = _table_value(distances, i, j)
            match = bool(matches[i, j])
            text = esc(str("" if nid is None else nid))
            if dist is not None:
                text += f"<br><small>{float(dist):.4f}</small>"
            flag = "match" if match else "miss"
            text += f"<br><small>{flag}</small>"
            cells.append(f'<td class="{flag}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")

    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(caption)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #999; padding: 2px 6px; text-align: center; }}
td.match {{ background: #d8f5d8; }}
td.miss {{ background: #f8d8d8; }}
</style>
</head>
<body>
<h1>{esc(caption)}</h1>
<p><img src="{esc(src)}" alt="{esc(caption)}"></p>
<table>
<thead><tr><th>query</th>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""
    with open(out_html, "w", encoding="utf-8") as f:
        f.write(page)


def render_rankings(query_images: Sequence, neighbour_images: Sequence, matches,
                    out_png: str, out_html: Optional[str] = None,
                    titles: Optional[Mapping] = None, thumb_size: int = 128,
                    max_neighbours: int = MAX_NEIGHBOURS) -> Tuple[str, Optional[str]]:
    """Draws the retrieval picture and, optionally, an HTML page around it.

    Args:
      query_images: Q uint8 images [H, W, 3]. Sizes may differ: every image
        is fitted into a thumb_size x thumb_size thumbnail (aspect kept).
      neighbour_images: Q rows of K uint8 images, nearest first.
      matches: [Q, K] bools, True where the neighbour shares the query's class.
      out_png: path of the PNG (parent directories are created).
      out_html: optional path of an HTML page showing the PNG (by relative
        link) and a table with one row per query: query id, then per
        neighbour its id, distance and match flag.
      titles: optional metadata for the HTML table, a mapping with any of
        "query_ids" [Q], "neighbour_ids" [Q][K], "distances" [Q][K] and
        "caption" (page title). Without ids, row / rank positions are shown.
        All text is HTML-escaped.
      thumb_size: thumbnail side in pixels.
      max_neighbours: only the first max_neighbours columns are drawn (8).

    Returns:
      (out_png, out_html or None). The PNG has size
      picture_size(Q, min(K, max_neighbours), thumb_size).
    """
    num_q = len(query_images)
    if num_q == 0:
        raise ValueError("render_rankings needs at least one query image")
    if len(neighbour_images) != num_q:
        raise ValueError(
            f"got {num_q} query images but {len(neighbour_images)} neighbour rows")
    matches = np.asarray(matches, dtype=bool)
    if matches.ndim != 2 or matches.shape[0] != num_q:
        raise ValueError(f"matches must be [Q={num_q}, K], got shape {matches.shape}")
    num_k = min(matches.shape[1], max_neighbours)
    if num_k == 0:
        raise ValueError("matches has no neighbour columns")
    for i, row in enumerate(neighbour_images):
        if len(row) != matches.shape[1]:
            raise ValueError(
                f"neighbour row {i} has {len(row)} images but matches has "
                f"{matches.shape[1]} columns")
    matches = matches[:, :num_k]
    if titles is not None and not isinstance(titles, Mapping):
        raise ValueError("titles must be a mapping (query_ids, neighbour_ids, distances, caption)")

    width, height = picture_size(num_q, num_k, thumb_size)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    cell = thumb_size + 2 * FRAME

    def column_x(col: int) -> int:  # col 0 is the query
        x = GAP + col * (cell + GAP)
        return x + SEPARATOR if col > 0 else x

    for col in range(num_k + 1):
        draw.text((column_x(col) + 2, GAP), "query" if col == 0 else str(col),
                  fill=TEXT_COLOUR, font=font)
    for i in range(num_q):
        y = GAP + HEADER + i * (cell + GAP)
        query = _thumbnail(_to_pil(query_images[i], f"query image {i}"), thumb_size)
        canvas.paste(_framed(query, QUERY_COLOUR), (column_x(0), y))
        for j in range(num_k):
            image = _to_pil(neighbour_images[i][j], f"neighbour image [{i}][{j}]")
            colour = MATCH_COLOUR if matches[i, j] else MISS_COLOUR
            canvas.paste(_framed(_thumbnail(image, thumb_size), colour), (column_x(j + 1), y))

    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    canvas.save(out_png, format="PNG")
    if out_html is None:
        return str(out_png), None
    os.makedirs(os.path.dirname(os.path.abspath(out_html)), exist_ok=True)
    _write_html(out_html, out_png, matches, dict(titles or {}))
    return str(out_png), str(out_html)


THUMB = 96


def square_thumbnail(image_bytes: bytes, size: int = THUMB) -> np.ndarray:
    """An encoded image padded to a centred square (as Transform does) and resized."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def write_rankings(out_dir: str, embeddings, labels, images, ids, queries: int, k: int = 8):
    """The seed's ranking picture: a row per query, its top-k, matches marked."""
    from components.recall_evaluator import metrics
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(labels), size=min(queries, len(labels)), replace=False))
    index, distance = metrics.nearest_neighbours(
        embeddings, embeddings, k=min(k, len(labels) - 1), exclude_self=True)
    index, distance = index[chosen], distance[chosen]
    return render_rankings(
        query_images=[square_thumbnail(images[q]) for q in chosen],
        neighbour_images=[[square_thumbnail(images[j]) for j in row] for row in index],
        matches=[[bool(labels[j] == labels[q]) for j in row] for q, row in zip(chosen, index)],
        out_png=os.path.join(out_dir, "rankings.png"),
        out_html=os.path.join(out_dir, "rankings.html"),
        titles={"query_ids": [ids[q] for q in chosen],
                "neighbour_ids": [[ids[j] for j in row] for row in index],
                "distances": distance.tolist()})
