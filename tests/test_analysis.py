"""`cgd analyze` and `cgd visualize` on a briefly trained, exported model."""
import json
import os

import numpy as np
import pytest
import tensorflow_transform as tft
import yaml
from PIL import Image

from components.recall_evaluator.embedding import embed_with_signature, read_eval_images
from components.recall_evaluator.metrics import retrieval_metrics
from core.config import TrainerJob
from pipeline.analysis import CAPTION_HEIGHT, GRID_COLUMNS
from pipeline.cli import main as cgd
from tests.conftest import latest_output
from trainer import export, sampler, task
from trainer.model import embedding_model


@pytest.fixture(scope="module")
def exported(data_pipeline, tmp_path_factory):
    """A briefly trained model, laid out like a TFX Model artifact, and its config file."""
    tmp = tmp_path_factory.mktemp("analysis")
    cfg = data_pipeline.replace(trainer={"epochs": 1, "steps_per_epoch": 3})
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    model, _ = task.train(TrainerJob.of(cfg), [os.path.join(transformed, "Split-train", "*.gz")],
                          [os.path.join(transformed, "Split-valid", "*.gz")], str(tmp / "run"))
    model_dir = tmp / "model"  # <dir>/Format-Serving/saved_model.pb
    export.export_saved_model(
        embedding_model(model),
        tft.TFTransformOutput(latest_output(cfg, "Transform", "transform_graph")),
        str(model_dir / "Format-Serving"), cfg.transform.image_size, cfg.transform.pad_value)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, model_dir, config_path


def test_analyze_prints_a_table_and_writes_the_evaluator_metrics(exported, tmp_path, capsys):
    cfg, model_dir, config_path = exported
    out = tmp_path / "new" / "dir" / "m.json"  # parent dirs are created
    assert cgd(["analyze", "--config", str(config_path), "--model", str(model_dir),
                "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    got = json.loads(out.read_text())

    images, labels, _ = read_eval_images(latest_output(cfg, "Cars196ExampleGen", "examples"),
                                         "eval")
    embeddings = embed_with_signature(str(model_dir / "Format-Serving"), images)
    expected = retrieval_metrics(embeddings, labels, ks=tuple(cfg.evaluator.recall_ks))
    assert got["recall@1"] == expected["recall@1"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got["split"] == "eval" and got["model"] == str(model_dir / "Format-Serving")

    # An aligned table: one row per metric, values right-aligned in one column.
    rows = {line.split()[0]: line for line in printed.splitlines()
            if line.split() and line.split()[0] in expected}
    assert set(rows) == set(expected)
    assert {f"recall@{k}" for k in cfg.evaluator.recall_ks} <= set(rows)
    assert len({len(line) for line in rows.values()}) == 1
    assert f"{expected['recall@1']:.4f}" in rows["recall@1"]

    # The SavedModel directory itself (as a Pusher version dir holds it) is accepted too.
    assert cgd(["analyze", "--config", str(config_path), "--model",
                str(model_dir / "Format-Serving"), "--examples",
                latest_output(cfg, "Cars196ExampleGen", "examples")]) == 0
    assert f"{expected['recall@1']:.4f}" in capsys.readouterr().out


def test_analyze_rejects_a_directory_without_a_model(exported, tmp_path, capsys):
    _, _, config_path = exported
    assert cgd(["analyze", "--config", str(config_path), "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err
    missing = tmp_path / "nope"
    assert cgd(["analyze", "--config", str(config_path), "--model", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err


def test_missing_examples_name_the_path_they_looked_in(exported, tmp_path, capsys):
    cfg, _, _ = exported
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(
        cfg.replace(pipeline={"root": str(tmp_path / "empty_root")}).to_dict()))
    assert cgd(["visualize", "data", "--config", str(other), "--out",
                str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert os.path.join(str(tmp_path / "empty_root"), cfg.pipeline.name,
                        "Cars196ExampleGen", "examples") in err
    assert not (tmp_path / "g.png").exists()


def test_visualize_data_tiles_are_the_transformed_training_images(exported, tmp_path, capsys):
    cfg, _, config_path = exported
    out = tmp_path / "pics" / "grid.png"
    assert cgd(["visualize", "data", "--config", str(config_path), "--out", str(out),
                "--count", "10"]) == 0
    assert str(out) in capsys.readouterr().out
    size = cfg.transform.image_size
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        assert grid.size == (GRID_COLUMNS * size, 2 * (size + CAPTION_HEIGHT))
        pixels = np.asarray(grid.convert("RGB"))
    tiles = [pixels[(n // GRID_COLUMNS) * (size + CAPTION_HEIGHT):][:size,
                    (n % GRID_COLUMNS) * size:][:, :size] for n in range(10)]
    # Each tile is exactly one image of the Transform's output for the train split.
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    train = sampler.load_image_set([os.path.join(transformed, "Split-train", "*.gz")], size)
    for tile in tiles:
        assert tile.shape == (size, size, 3)
        assert any(np.array_equal(tile, image) for image in train.images)
    assert len({tile.tobytes() for tile in tiles}) == 10  # distinct images
    # Captions are drawn below the tiles.
    assert pixels[size:size + CAPTION_HEIGHT].min() < 128


def test_visualize_rankings_writes_png_and_html(exported, tmp_path, capsys):
    _, model_dir, config_path = exported
    out_dir = tmp_path / "new" / "rankings"
    assert cgd(["visualize", "rankings", "--config", str(config_path), "--model",
                str(model_dir), "--out-dir", str(out_dir), "--queries", "4"]) == 0
    printed = capsys.readouterr().out
    png, html = out_dir / "rankings.png", out_dir / "rankings.html"
    assert str(png) in printed and str(html) in printed
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.size[0] > picture.size[1] > 0
    assert "rankings.png" in html.read_text()
    assert cgd(["visualize", "rankings", "--config", str(config_path), "--model",
                str(model_dir), "--queries", "0"]) == 1
    assert "--queries" in capsys.readouterr().err
