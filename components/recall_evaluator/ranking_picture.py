"""Retrieval picture: each row a query image, then its nearest neighbours.

A legend on top says what the frames mean: the query is framed blue,
neighbours of the query's class green, the others red. Under each image its
class id and, for a neighbour, its distance to the query. PIL only, no
matplotlib. Optionally an HTML page shows the picture plus a table of image
ids, class ids, distances and match flags.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import os
import urllib.parse
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_NEIGHBOURS = 8

# Layout, in pixels (see layout / picture_size).
FRAME = 4          # coloured border around each thumbnail
GAP = 6            # between cells, and the outer margin
SEPARATOR = 18     # extra space between the query column and the neighbours
LEGEND_LINE = 18   # one line of the legend
LEGEND = 2 * LEGEND_LINE + 2  # the legend: frame colours, then what the captions say
COLUMN_LABELS = 16  # row of column labels ("query", "1", "2", ...)
HEADER = LEGEND + COLUMN_LABELS  # everything above the first row of images
CAPTION_LINE = 13  # one line of caption text
CAPTION = 2 * CAPTION_LINE + 2  # under each cell: class id, then distance
SWATCH = 14        # side of a legend swatch (a small frame in the legend colour)
FONT_SIZE = 11
LEGEND_FONT_SIZE = 12

BACKGROUND = (255, 255, 255)
PAD_COLOUR = (230, 230, 230)
QUERY_COLOUR = (30, 90, 200)
MATCH_COLOUR = (0, 170, 0)
MISS_COLOUR = (220, 0, 0)
TEXT_COLOUR = (40, 40, 40)

LEGEND_ITEMS = ((QUERY_COLOUR, "query"), (MATCH_COLOUR, "same class as the query"),
                (MISS_COLOUR, "other class"))

Box = Tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """PIL's built-in font at ``size`` px (its bitmap font when FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def text_width(text: str, font_: ImageFont.ImageFont) -> int:
    return int(np.ceil(font_.getlength(text)))


def fit_text(candidates: Sequence[str], width: int, font_: ImageFont.ImageFont) -> str:
    """The first candidate that fits in ``width`` px, else the last (shortest) one."""
    for text in candidates:
        if text_width(text, font_) <= width:
            return text
    return candidates[-1]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything of the ranking picture goes (see ``layout``)."""
    size: Tuple[int, int]                      # (width, height) of the PNG
    cell: int                                  # side of a framed cell
    cells: List[List[Tuple[int, int]]]         # [Q][1 + K] top-left of each framed cell
    captions: List[List[Box]]                  # [Q][1 + K] text box under each cell
    swatches: List[Tuple[Tuple[int, int, int], Box]]  # legend line 1: (colour, box)
    swatch_texts: List[Tuple[str, Tuple[int, int]]]   # legend line 1: (text, top-left)
    note: Box                                  # legend line 2: what the captions say
    column_labels: List[Tuple[str, Tuple[int, int]]]  # ("query" | "1".., top-left)


def layout(num_queries: int, num_neighbours: int, thumb_size: int = 128) -> Layout:
    """The ranking picture's layout for Q rows of 1 + K cells.

    From the top: the legend (line 1: a swatch per frame colour and its
    meaning; line 2: what the captions say), the column labels, then one row
    per query: the query's cell, a separator, its K neighbours' cells, each
    with a caption box of two text lines under it. The canvas is widened when
    the legend's first line is wider than the rows.
    """
    cell = thumb_size + 2 * FRAME
    legend_font = font(LEGEND_FONT_SIZE)
    swatches, swatch_texts = [], []
    x = GAP
    swatch_top = GAP + (LEGEND_LINE - SWATCH) // 2
    for colour, text in LEGEND_ITEMS:
        swatches.append((colour, (x, swatch_top, x + SWATCH, swatch_top + SWATCH)))
        x += SWATCH + 5
        swatch_texts.append((text, (x, swatch_top)))
        x += text_width(text, legend_font) + 16
    legend_width = x - 16 + GAP

    def column_x(col: int) -> int:  # col 0 is the query
        x = GAP + col * (cell + GAP)
        return x + SEPARATOR if col > 0 else x

    grid_width = 2 * GAP + SEPARATOR + (num_neighbours + 1) * cell + num_neighbours * GAP
    width = max(grid_width, legend_width)
    pitch = cell + CAPTION + GAP
    height = 2 * GAP + HEADER + num_queries * pitch - GAP
    cells = [[(column_x(col), GAP + HEADER + i * pitch) for col in range(num_neighbours + 1)]
             for i in range(num_queries)]
    captions = [[(x, y + cell + 1, x + cell, y + cell + CAPTION) for x, y in row]
                for row in cells]
    column_labels = [("query" if col == 0 else str(col), (column_x(col) + 2, GAP + LEGEND))
                     for col in range(num_neighbours + 1)]
    note_top = GAP + LEGEND_LINE + 2
    return Layout(size=(width, height), cell=cell, cells=cells, captions=captions,
                  swatches=swatches, swatch_texts=swatch_texts,
                  note=(GAP, note_top, width - GAP, note_top + LEGEND_LINE),
                  column_labels=column_labels)


def picture_size(num_queries: int, num_neighbours: int,
                 thumb_size: int = 128) -> Tuple[int, int]:
    """(width, height) in pixels of the PNG for Q rows of 1 + K cells."""
    return layout(num_queries, num_neighbours, thumb_size).size


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


def _legend_note(has_classes: bool, has_distances: bool, has_ids: bool,
                 distance_name: str) -> List[str]:
    """What the captions under the images say: the legend's second line, longest first."""
    if has_classes and has_distances:
        return [f"Under each image: its class id; under a neighbour also d, its "
                f"{distance_name} to the query.",
                f"Under each image: class id; d = {distance_name} to the query.",
                "class id; d = distance to the query"]
    if has_distances:
        return [f"Under each neighbour: d, its {distance_name} to the query.",
                "d = distance to the query"]
    if has_classes:
        return ["Under each image: its class id.", "class id"]
    if has_ids:
        return ["Under each image: its id.", "id"]
    return [""]


def _write_html(out_html: str, out_png: str, matches: np.ndarray, titles: Mapping) -> None:
    query_ids = titles.get("query_ids")
    neighbour_ids = titles.get("neighbour_ids")
    query_classes = titles.get("query_classes")
    neighbour_classes = titles.get("neighbour_classes")
    distances = titles.get("distances")
    id_heading = str(titles.get("id_heading", "id"))
    distance_name = str(titles.get("distance_name", "distance"))
    caption = str(titles.get("caption", "Retrieval results"))
    note = titles.get("note")
    src = os.path.relpath(os.path.abspath(out_png),
                          os.path.dirname(os.path.abspath(out_html)))
    src = urllib.parse.quote(src.replace(os.sep, "/"))
    esc = html.escape
    num_q, num_k = matches.shape

    def lines(image_id, class_id, dist=None, flag=None) -> str:
        parts = [esc(str(image_id))] if image_id is not None else []
        if class_id is not None:
            parts.append(f"<b>class {esc(str(class_id))}</b>")
        if dist is not None:
            parts.append(f"<small>d {float(dist):.4f}</small>")
        if flag is not None:
            parts.append(f"<small>{flag}</small>")
        return "<br>".join(parts)

    head = "".join(f"<th>{j + 1}</th>" for j in range(num_k))
    rows = []
    for i in range(num_q):
        qid = _table_value(query_ids, i)
        qclass = _table_value(query_classes, i)
        query = lines(i + 1 if qid is None and qclass is None else qid, qclass)
        cells = [f'<td class="query">{query}</td>']
        for j in range(num_k):
            flag = "match" if bool(matches[i, j]) else "miss"
            text = lines(_table_value(neighbour_ids, i, j), _table_value(neighbour_classes, i, j),
                         _table_value(distances, i, j), flag)
            cells.append(f'<td class="{flag}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")

    cell_parts = ([id_heading] if query_ids is not None or neighbour_ids is not None else []) \
        + (["class id"] if query_classes is not None or neighbour_classes is not None else []) \
        + ([f"d = {distance_name} to the query"] if distances is not None else []) \
        + ["match (same class as the query) or miss"]
    explain = ("Each row: a query, then its nearest neighbours, nearest first. "
               f"Each cell: {esc('; '.join(cell_parts))}.")
    note_html = f"<p>{esc(str(note))}</p>\n" if note else ""

    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(caption)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #999; padding: 2px 6px; text-align: center; }}
td.query {{ background: #dde6f7; }}
td.match {{ background: #d8f5d8; }}
td.miss {{ background: #f8d8d8; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; border: 3px solid;
          vertical-align: middle; margin: 0 0.3em 0 1em; }}
</style>
</head>
<body>
<h1>{esc(caption)}</h1>
<p>Frames:<span class="swatch" style="border-color: rgb{QUERY_COLOUR}"></span>query
<span class="swatch" style="border-color: rgb{MATCH_COLOUR}"></span>same class as the query
<span class="swatch" style="border-color: rgb{MISS_COLOUR}"></span>other class</p>
<p>{explain}</p>
{note_html}<p><img src="{esc(src)}" alt="{esc(caption)}"></p>
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


def _draw_caption(draw: ImageDraw.ImageDraw, box: Box, texts: Sequence[Sequence[str]],
                  font_: ImageFont.ImageFont) -> None:
    """Up to two lines, each the first of its candidates that fits, centred in ``box``."""
    left, top, right, _ = box
    for n, candidates in enumerate(texts):
        if not candidates:
            continue
        text = fit_text(candidates, right - left, font_)
        x = left + (right - left - text_width(text, font_)) // 2
        draw.text((x, top + n * CAPTION_LINE), text, fill=TEXT_COLOUR, font=font_)


def _class_text(class_id) -> List[str]:
    return [f"class {class_id}", f"c{class_id}", str(class_id)]


def _distance_text(dist) -> List[str]:
    return [f"d {float(dist):.3f}", f"{float(dist):.3f}", f"{float(dist):.2f}"]


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
        link) and a table with one row per query: the query's id and class,
        then per neighbour its id, class, distance and match flag.
      titles: optional metadata, a mapping with any of "query_ids" [Q],
        "neighbour_ids" [Q][K], "query_classes" [Q], "neighbour_classes"
        [Q][K], "distances" [Q][K], "caption" (page title), "id_heading" (what
        the ids are, e.g. "image id (Cars196 archive file)"), "distance_name"
        (e.g. "Euclidean distance") and "note" (a paragraph of the page).
        Classes (else ids) and distances are also written under the images
        of the PNG. Without ids, row positions are shown. All text is
        HTML-escaped.
      thumb_size: thumbnail side in pixels.
      max_neighbours: only the first max_neighbours columns are drawn (8).

    Returns:
      (out_png, out_html or None). The PNG has size
      picture_size(Q, min(K, max_neighbours), thumb_size), its parts are where
      layout(...) says.
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
        raise ValueError("titles must be a mapping (query_ids, neighbour_ids, query_classes, "
                         "neighbour_classes, distances, caption, ...)")
    titles = dict(titles or {})
    query_ids, neighbour_ids = titles.get("query_ids"), titles.get("neighbour_ids")
    query_classes = titles.get("query_classes")
    neighbour_classes = titles.get("neighbour_classes")
    distances = titles.get("distances")

    plan = layout(num_q, num_k, thumb_size)
    canvas = Image.new("RGB", plan.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    small, legend_font = font(FONT_SIZE), font(LEGEND_FONT_SIZE)

    # Legend: what the frame colours mean, then what the captions say.
    for (colour, (left, top, right, bottom)), (text, origin) in zip(plan.swatches,
                                                                     plan.swatch_texts):
        draw.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=3)
        draw.text(origin, text, fill=TEXT_COLOUR, font=legend_font)
    note = fit_text(_legend_note(query_classes is not None or neighbour_classes is not None,
                                 distances is not None,
                                 query_ids is not None or neighbour_ids is not None,
                                 str(titles.get("distance_name", "distance"))),
                    plan.note[2] - plan.note[0], legend_font)
    draw.text(plan.note[:2], note, fill=TEXT_COLOUR, font=legend_font)
    for text, origin in plan.column_labels:
        draw.text(origin, text, fill=TEXT_COLOUR, font=small)

    def first_line(classes, ids, *index) -> List[str]:
        class_id = _table_value(classes, *index)
        if class_id is not None:
            return _class_text(class_id)
        image_id = _table_value(ids, *index)
        return [] if image_id is None else [str(image_id), str(image_id).rsplit("/", 1)[-1]]

    for i in range(num_q):
        query = _thumbnail(_to_pil(query_images[i], f"query image {i}"), thumb_size)
        canvas.paste(_framed(query, QUERY_COLOUR), plan.cells[i][0])
        _draw_caption(draw, plan.captions[i][0], [first_line(query_classes, query_ids, i)],
                      small)
        for j in range(num_k):
            image = _to_pil(neighbour_images[i][j], f"neighbour image [{i}][{j}]")
            colour = MATCH_COLOUR if matches[i, j] else MISS_COLOUR
            canvas.paste(_framed(_thumbnail(image, thumb_size), colour), plan.cells[i][j + 1])
            dist = _table_value(distances, i, j)
            _draw_caption(draw, plan.captions[i][j + 1],
                          [first_line(neighbour_classes, neighbour_ids, i, j),
                           [] if dist is None else _distance_text(dist)], small)

    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    canvas.save(out_png, format="PNG")
    if out_html is None:
        return str(out_png), None
    os.makedirs(os.path.dirname(os.path.abspath(out_html)), exist_ok=True)
    _write_html(out_html, out_png, matches, titles)
    return str(out_png), str(out_html)


THUMB = 96
IMAGE_ID_HEADING = "image id (file name in the dataset)"


def square_thumbnail(image_bytes: bytes, size: int = THUMB,
                     pad_value: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """An encoded image padded to a centred square with ``pad_value`` (as Transform does,
    with ``transform.pad_value``) and resized."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in pad_value))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def model_pad_value(saved_model_dir: str) -> tuple[int, int, int]:
    """The pad colour a model was trained with (``pad_value`` in its contract), so that the
    picture shows images as the model saw them; black for a model without a contract."""
    import tensorflow as tf

    from core.names import CONTRACT_FILE
    path = os.path.join(saved_model_dir, "assets.extra", CONTRACT_FILE)
    if not tf.io.gfile.exists(path):
        return (0, 0, 0)
    with tf.io.gfile.GFile(path) as f:
        pad = json.load(f).get("pad_value", (0, 0, 0))
    return tuple(int(v) for v in pad)


def archive_id_note(split: Optional[str] = None) -> str:
    """What the image ids of the HTML page are (they read like split names, but are not)."""
    queries = f"these queries of the {split} split" if split else "the queries"
    return ("Image ids are the dataset's own file names (for Cars196, train/00063 is "
            "cars_train/00063.jpg in cars_train.tgz, test/00063 is cars_test/00063.jpg in "
            "cars_test.tgz). The retrieval split "
            f"is by class, not by the original files' split, so {queries} and their "
            "neighbours can come from any of them: a train/ id does not mean training data. "
            "Class ids are the dataset's 1-based class ids (Cars196: 1-196).")


def _ranked_rows(x: np.ndarray, queries: int, k: int, roles):
    """(neighbour rows [q, k], distances [q, k], chosen query rows [q]): a seeded sample of
    the queries and each one's k nearest gallery images other than itself."""
    from search.exact import nearest_neighbours
    rng = np.random.default_rng(0)
    if roles is None:
        chosen = np.sort(rng.choice(len(x), size=min(queries, len(x)), replace=False))
        index, distance = nearest_neighbours(x, x, k=min(k, len(x) - 1), exclude_self=True)
        return index[chosen], distance[chosen], chosen
    roles = np.asarray(roles).astype(str)
    query_rows = np.flatnonzero(roles != "gallery")
    gallery_rows = np.flatnonzero(roles != "query")
    chosen = np.sort(rng.choice(query_rows, size=min(queries, len(query_rows)), replace=False))
    # One more than k: a query that is also in the gallery finds itself first.
    index, distance = nearest_neighbours(x[chosen], x[gallery_rows],
                                         k=min(k + 1, len(gallery_rows)))
    rows, dists = [], []
    for q, row, dist in zip(chosen, gallery_rows[index], distance):
        keep = row != q
        rows.append(row[keep][:k])
        dists.append(dist[keep][:k])
    width = min(len(r) for r in rows)
    return (np.stack([r[:width] for r in rows]), np.stack([d[:width] for d in dists]), chosen)


def write_rankings(out_dir: str, embeddings, labels, images, ids, queries: int, k: int = 8,
                   split: Optional[str] = None, roles=None,
                   pad_value: Sequence[int] = (0, 0, 0)):
    """The ranking picture: a row per query, its top-k, matches marked, classes shown.

    ``labels`` are the examples' 0-based labels; the PNG and HTML show the
    1-based class id (label + 1). ``split`` only names the queries' split in the
    page. ``roles`` ("query"/"gallery"/"" per image, or None) restricts the rows to
    queries and their neighbours to the gallery, as the metrics do. ``pad_value``: the
    colour the images are padded to square with, the model's (``model_pad_value``). Writes
    rankings.png and rankings.html into ``out_dir`` and returns their paths.
    """
    index, distance, chosen = _ranked_rows(np.asarray(embeddings), queries, k, roles)
    class_id = [int(label) + 1 for label in labels]
    what = f"{len(chosen)} queries of the {split} split" if split else f"{len(chosen)} queries"
    if roles is not None:
        what += ", searched in its gallery"
    return render_rankings(
        query_images=[square_thumbnail(images[q], pad_value=pad_value) for q in chosen],
        neighbour_images=[[square_thumbnail(images[j], pad_value=pad_value) for j in row]
                          for row in index],
        matches=[[bool(labels[j] == labels[q]) for j in row] for q, row in zip(chosen, index)],
        out_png=os.path.join(out_dir, "rankings.png"),
        out_html=os.path.join(out_dir, "rankings.html"),
        titles={"query_ids": [ids[q] for q in chosen],
                "neighbour_ids": [[ids[j] for j in row] for row in index],
                "query_classes": [class_id[q] for q in chosen],
                "neighbour_classes": [[class_id[j] for j in row] for row in index],
                "distances": distance.tolist(),
                "caption": f"Nearest neighbours of {what}",
                "id_heading": IMAGE_ID_HEADING,
                "distance_name": "Euclidean distance",
                "note": archive_id_note(split)})
