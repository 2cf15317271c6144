"""The pictures a person reads: ranking PNG/HTML (legend, captions) and the data grid
(gaps, one label per tile). Pure NumPy/PIL, no TensorFlow: fast."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from components.recall_evaluator import ranking_picture as RP
from cli.analysis_commands import GRID_BACKGROUND, GRID_GAP, draw_grid, grid_layout

INK = 128  # a pixel darker than this (all channels) is text


def _encoded(colour, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def _crop(pixels: np.ndarray, box) -> np.ndarray:
    left, top, right, bottom = box
    return pixels[top:bottom, left:right]


def _ink(region: np.ndarray) -> int:
    return int((region.max(axis=-1) < INK).sum())


def _expected_caption(box, lines, font) -> np.ndarray:
    """The caption box as the picture should have it: each line centred, TEXT_COLOUR."""
    left, top, right, bottom = box
    image = Image.new("RGB", (right - left, bottom - top), RP.BACKGROUND)
    draw = ImageDraw.Draw(image)
    for n, text in enumerate(lines):
        if text:
            x = (right - left - RP.text_width(text, font)) // 2
            draw.text((x, n * RP.CAPTION_LINE), text, fill=RP.TEXT_COLOUR, font=font)
    return np.asarray(image)


@pytest.fixture(scope="module")
def rankings(tmp_path_factory):
    """write_rankings on 12 images of 4 classes whose embeddings cluster by class."""
    out = tmp_path_factory.mktemp("rankings")
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10, 14), 3)  # 0-based labels: Cars196 classes 11-14
    colours = [(200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60)]
    images = [_encoded(colours[label - 10], (40 + 5 * (i % 3), 30)) for i, label in enumerate(labels)]
    ids = [f"{'train' if i % 2 else 'test'}/{i + 1:05d}" for i in range(len(labels))]
    embeddings = (np.eye(4)[labels - 10] * 2 + rng.normal(0, 0.4, (12, 4))).astype(np.float32)
    png, html = RP.write_rankings(str(out), embeddings, labels, images, ids, queries=3, k=5,
                                  split="eval")
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    return dict(png=png, html=html, pixels=pixels, labels=labels, ids=ids,
                embeddings=embeddings, plan=RP.layout(3, 5, 128))


def test_ranking_png_has_a_legend_above_the_rows(rankings):
    pixels, plan = rankings["pixels"], rankings["plan"]
    assert pixels.shape[1::-1] == plan.size
    assert [colour for colour, _ in plan.swatches] == \
        [RP.QUERY_COLOUR, RP.MATCH_COLOUR, RP.MISS_COLOUR]
    assert [text for text, _ in plan.swatch_texts] == \
        ["query", "same class as the query", "other class"]
    first_row_top = plan.cells[0][0][1]
    for (colour, (left, top, right, bottom)), (_, (tx, ty)) in zip(plan.swatches,
                                                                    plan.swatch_texts):
        assert bottom <= first_row_top
        swatch = pixels[top:bottom, left:right]
        # A small frame in the legend colour: its border is the colour, its inside is not.
        for edge in (swatch[0], swatch[-1], swatch[:, 0], swatch[:, -1]):
            assert (edge == colour).all()
        assert (swatch[5:-5, 5:-5] == RP.BACKGROUND).all()
        # Its meaning written right of it, on the same line.
        assert _ink(pixels[ty:ty + RP.LEGEND_LINE, tx:tx + 30]) > 10
    # Line 2 says what the captions are.
    assert _ink(_crop(pixels, plan.note)) > 50


def test_ranking_png_has_one_caption_per_tile_with_class_and_distance(rankings):
    pixels, plan = rankings["pixels"], rankings["plan"]
    labels, embeddings = rankings["labels"], rankings["embeddings"]
    font = RP.font(RP.FONT_SIZE)
    boxes = [box for row in plan.captions for box in row]
    assert len(boxes) == 3 * (1 + 5)
    assert all(_ink(_crop(pixels, box)) > 10 for box in boxes)  # one label per tile

    # Nothing is written between the captions and the next row except the captions.
    blank = pixels.copy()
    for box in boxes:
        left, top, right, bottom = box
        blank[top:bottom, left:right] = RP.BACKGROUND
    for i in range(3):
        y = plan.cells[i][0][1] + plan.cell
        assert _ink(blank[y:y + RP.CAPTION + RP.GAP]) == 0

    # The captions say what they should: the same queries and neighbours as write_rankings.
    chosen = np.sort(np.random.default_rng(0).choice(12, size=3, replace=False))
    from search.exact import nearest_neighbours
    index, distance = nearest_neighbours(embeddings, embeddings, k=5, exclude_self=True)
    for row, q in enumerate(chosen):
        # The query: its 1-based class id, one line.
        assert np.array_equal(_crop(pixels, plan.captions[row][0]), _expected_caption(
            plan.captions[row][0], [f"class {labels[q] + 1}"], font))
        for j in range(5):
            box = plan.captions[row][j + 1]
            n = index[q, j]
            assert np.array_equal(_crop(pixels, box), _expected_caption(
                box, [f"class {labels[n] + 1}", f"d {distance[q, j]:.3f}"], font)), (row, j)


def test_ranking_html_shows_class_ids_and_says_what_the_ids_are(rankings):
    page = open(rankings["html"], encoding="utf-8").read()
    labels, ids = rankings["labels"], rankings["ids"]
    assert "image id (file name in the dataset)" in page
    assert "cars_train.tgz" in page and "does not mean training data" in page
    assert "eval split" in page
    chosen = np.sort(np.random.default_rng(0).choice(12, size=3, replace=False))
    for q in chosen:
        assert f'<td class="query">{ids[q]}<br><b>class {labels[q] + 1}</b></td>' in page
    assert page.count("<b>class ") == 3 * (1 + 5)
    # The legend of the frames, as on the PNG.
    assert "same class as the query" in page and "other class" in page


def test_render_rankings_without_classes_keeps_its_layout(tmp_path):
    """The generic renderer: no classes, ids or distances; legend and size as layout says."""
    rng = np.random.default_rng(1)
    q = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)]
    n = [[rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]]
    png, _ = RP.render_rankings(q, n, [[True, False]], str(tmp_path / "r.png"), thumb_size=32)
    plan = RP.layout(1, 2, 32)
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[1::-1] == plan.size == RP.picture_size(1, 2, 32)
    # The canvas is widened for the legend, which is wider than 3 small cells.
    assert plan.size[0] > 2 * RP.GAP + RP.SEPARATOR + 3 * plan.cell + 2 * RP.GAP
    for colour, (left, top, right, bottom) in plan.swatches:
        assert (pixels[top, left:right] == colour).all()
    # No captions to write: the caption boxes stay empty.
    assert all(_ink(_crop(pixels, box)) == 0 for row in plan.captions for box in row)


def test_data_grid_has_gaps_between_tiles_and_a_label_per_tile():
    size, count, columns = 32, 11, 4
    colours = np.random.default_rng(2).integers(20, 235, (count, 3), dtype=np.uint8)
    squares = np.broadcast_to(colours[:, None, None, :], (count, size, size, 3)).copy()
    class_ids = [int(c) for c in np.arange(count) % 5 + 1]
    grid = np.asarray(draw_grid(squares, class_ids, "t", columns=columns))
    plan = grid_layout(count, size, columns)
    assert grid.shape[1::-1] == plan["size"]
    assert len(plan["tiles"]) == len(plan["labels"]) == count

    background = np.all(grid == GRID_BACKGROUND, axis=-1)
    occupied = np.zeros(background.shape, bool)
    for n, ((x, y), label) in enumerate(zip(plan["tiles"], plan["labels"])):
        assert np.array_equal(grid[y:y + size, x:x + size], squares[n])  # the image itself
        occupied[y:y + size, x:x + size] = True
        # One label per tile, under it: the tile's class id.
        left, top, right, bottom = label
        assert top >= y + size and _ink(grid[top:bottom, left - GRID_GAP // 2:
                                             right + GRID_GAP // 2]) > 5
        occupied[top:bottom, left - GRID_GAP // 2:right + GRID_GAP // 2] = True
    # A gap of background between horizontally and vertically neighbouring tiles.
    (x0, y0), (x1, _), (_, y_next) = plan["tiles"][0], plan["tiles"][1], plan["tiles"][columns]
    assert x1 - (x0 + size) == GRID_GAP
    assert background[y0:y0 + size, x0 + size:x1].all()
    assert y_next - (y0 + size) > GRID_GAP
    assert background[plan["labels"][0][3]:y_next, x0:x0 + size].all()
    # Margins around the tiles (labels and title may reach half into the left one).
    assert background[:, :GRID_GAP // 2].all() and background[-GRID_GAP:, :].all()
    assert background[:, -GRID_GAP // 2:].all()
    # Outside tiles, labels and the title line, only background.
    title_bottom = plan["tiles"][0][1]
    assert background[title_bottom:][~occupied[title_bottom:]].all()

    # The labels read "class <id>": compared with the text rendered on its own.
    font = RP.font(RP.FONT_SIZE)
    for n in (0, 6):
        left, top, right, bottom = plan["labels"][n]
        text = RP.fit_text([f"class {class_ids[n]}", f"c{class_ids[n]}", str(class_ids[n])],
                           right - left + GRID_GAP - 2, font)
        expected = Image.new("RGB", (grid.shape[1], grid.shape[0]), GRID_BACKGROUND)
        ImageDraw.Draw(expected).text(
            (left + (right - left - RP.text_width(text, font)) // 2, top), text,
            fill=RP.TEXT_COLOUR, font=font)
        lo, hi = left - GRID_GAP // 2, right + GRID_GAP // 2
        assert np.array_equal(grid[top:bottom, lo:hi], np.asarray(expected)[top:bottom, lo:hi])


def test_data_grid_is_widened_for_its_title():
    squares = np.zeros((2, 16, 16, 3), np.uint8)
    title = "2 images of the train split as the Transform outputs them"
    grid = draw_grid(squares, [1, 2], title)
    tiles_width = GRID_GAP + 2 * (16 + GRID_GAP)
    assert grid.size[0] > tiles_width
    assert grid.size == grid_layout(2, 16, title_width=RP.text_width(
        title, RP.font(RP.LEGEND_FONT_SIZE)))["size"]
    pixels = np.asarray(grid)
    assert _ink(pixels[:grid_layout(2, 16)["tiles"][0][1], tiles_width:]) > 20  # title text


def test_ranking_tiles_are_padded_with_the_models_pad_value(tmp_path):
    """The thumbnails are padded to square as the model saw them (transform.pad_value, read
    from the model's contract), not black."""
    import json
    pad = (124, 116, 104)
    model = tmp_path / "model"
    (model / "assets.extra").mkdir(parents=True)
    (model / "assets.extra" / "contract.json").write_text(json.dumps({"pad_value": list(pad)}))
    assert RP.model_pad_value(str(model)) == pad
    assert RP.model_pad_value(str(tmp_path / "no_contract")) == (0, 0, 0)

    labels = np.repeat(np.arange(2), 3)
    images = [_encoded((200, 60, 60) if label else (60, 60, 200), (40, 20)) for label in labels]
    embeddings = np.eye(2, dtype=np.float32)[labels] + 0.01 * np.arange(6)[:, None]
    png, _ = RP.write_rankings(str(tmp_path / "out"), embeddings, labels, images,
                               [f"i{n}" for n in range(6)], queries=2, k=3,
                               pad_value=RP.model_pad_value(str(model)))
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    plan = RP.layout(2, 3, 128)
    for row in plan.cells:
        for left, top, *_ in row:
            inner_left, inner_top = left + RP.FRAME, top + RP.FRAME
            # A 40x20 image padded to 40x40: the top and bottom quarters are padding.
            border = pixels[inner_top + 4, inner_left + 64]
            bottom = pixels[inner_top + 123, inner_left + 64]
            centre = pixels[inner_top + 64, inner_left + 64]
            assert np.abs(border - pad).max() <= 3 and np.abs(bottom - pad).max() <= 3, border
            assert np.abs(centre - pad).max() > 40  # the image itself
