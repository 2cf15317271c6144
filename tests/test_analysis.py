"""`cgd analyze` and `cgd visualize` on a briefly trained, exported model."""
import json
import os

import numpy as np
import pytest
import tensorflow_transform as tft
import yaml
from PIL import Image

from components.recall_evaluator.executor import embed_with_signature, read_eval_images
from components.recall_evaluator.metrics import retrieval_metrics
from pipeline.cli import main as cgd
from tests.conftest import latest_output
from trainer import export, task
from trainer.model import embedding_model


@pytest.fixture(scope="module")
def exported(data_pipeline, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    cfg = data_pipeline.replace(trainer={"epochs": 1, "steps_per_epoch": 3})
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    model, _ = task.train(cfg, [os.path.join(transformed, "Split-train", "*.gz")],
                          [os.path.join(transformed, "Split-valid", "*.gz")], str(tmp / "run"))
    # Laid out like a TFX Model artifact: <dir>/Format-Serving/saved_model.pb
    model_dir = tmp / "model"
    export.export_saved_model(
        embedding_model(model), tft.TFTransformOutput(latest_output(cfg, "Transform",
                                                                    "transform_graph")),
        str(model_dir / "Format-Serving"), cfg.transform.image_size, cfg.transform.pad_value)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, model_dir, config_path


def test_analyze_prints_and_writes_the_evaluator_metrics(exported, tmp_path, capsys):
    cfg, model_dir, config_path = exported
    out = tmp_path / "m.json"
    assert cgd(["analyze", "--config", str(config_path), "--model", str(model_dir),
                "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recall@1" in printed and "map@r" in printed and "nmi" in printed
    got = json.loads(out.read_text())
    images, labels, _ = read_eval_images(latest_output(cfg, "Cars196ExampleGen", "examples"),
                                         "eval")
    expected = retrieval_metrics(embed_with_signature(str(model_dir / "Format-Serving"), images),
                                 labels, ks=tuple(cfg.evaluator.recall_ks))
    for key in ("recall@1", "recall@8", "map@r", "nmi"):
        assert got[key] == pytest.approx(expected[key])
    # The SavedModel directory itself is accepted too.
    assert cgd(["analyze", "--config", str(config_path), "--model",
                str(model_dir / "Format-Serving")]) == 0


def test_analyze_rejects_a_directory_without_a_model(exported, tmp_path, capsys):
    _, _, config_path = exported
    assert cgd(["analyze", "--config", str(config_path), "--model", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def test_visualize_data_writes_a_grid_of_square_tiles(exported, tmp_path):
    cfg, _, config_path = exported
    out = tmp_path / "grid.png"
    assert cgd(["visualize", "data", "--config", str(config_path), "--out", str(out),
                "--count", "10"]) == 0
    size = cfg.transform.image_size
    with Image.open(out) as grid:
        assert grid.size == (8 * size, 2 * (size + 14))
        tile = np.asarray(grid.convert("RGB"))[:size, :size]
    assert tile.std() > 0  # an image, not an empty tile


def test_visualize_rankings_writes_png_and_html(exported, tmp_path):
    _, model_dir, config_path = exported
    assert cgd(["visualize", "rankings", "--config", str(config_path), "--model",
                str(model_dir), "--out-dir", str(tmp_path), "--queries", "4"]) == 0
    assert (tmp_path / "rankings.png").stat().st_size > 0
    assert "rankings.png" in (tmp_path / "rankings.html").read_text()
