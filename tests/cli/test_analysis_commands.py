"""`cgd analyze` and `cgd visualize` on a briefly trained, exported model."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow_transform as tft
import yaml
from PIL import Image

from components.recall_evaluator.embedding import embed_with_signature, read_eval_images
from components.recall_evaluator.metrics import retrieval_metrics
from core.config import TrainerJob
from cli.analysis_commands import GRID_BACKGROUND, GRID_GAP, grid_layout, model_layout
from cli.main import main as cgd
from tests.conftest import latest_output, small_config
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


@pytest.mark.slow
def test_analyze_prints_a_table_and_writes_the_evaluator_metrics(exported, tmp_path, capsys):
    cfg, model_dir, config_path = exported
    out = tmp_path / "new" / "dir" / "m.json"  # parent dirs are created
    assert cgd(["analyze", "--config", str(config_path), "--model", str(model_dir),
                "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    got = json.loads(out.read_text())

    images, labels, *_ = read_eval_images(latest_output(cfg, "RetrievalExampleGen", "examples"),
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
                latest_output(cfg, "RetrievalExampleGen", "examples")]) == 0
    assert f"{expected['recall@1']:.4f}" in capsys.readouterr().out

    # And a model base dir as the Pusher fills it (<serving_dir>/cgd): its newest version.
    base = tmp_path / "serving" / "cgd"
    for version in ("5", "12"):  # 12 is newer although "5" > "12" as strings
        shutil.copytree(model_dir / "Format-Serving", base / version)
    (base / "tmp-export").mkdir()  # not a version
    assert cgd(["analyze", "--config", str(config_path), "--model", str(base)]) == 0
    printed = capsys.readouterr().out
    assert f"model:    {base / '12'} (" in printed and str(base) in printed
    assert f"{expected['recall@1']:.4f}" in printed


@pytest.mark.slow
def test_analyze_rejects_a_directory_without_a_model(exported, tmp_path, capsys):
    _, _, config_path = exported
    assert cgd(["analyze", "--config", str(config_path), "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err
    missing = tmp_path / "nope"
    assert cgd(["analyze", "--config", str(config_path), "--model", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err


def _saved_model(path):
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    return str(path)


def test_model_layouts_each_resolve_to_their_saved_model(tmp_path):
    """The three layouts --model takes, and a pointer to the right dir for near misses."""
    # A SavedModel version dir, as the Pusher writes <serving_dir>/cgd/<version>.
    version = _saved_model(tmp_path / "serving" / "cgd" / "1700000000")
    assert model_layout(version) == (version, "SavedModel version directory")
    # A model base dir: the newest (numerically highest) version holding a SavedModel.
    base = tmp_path / "serving" / "cgd"
    newest = _saved_model(base / "1700000123")
    (base / "1800000000").mkdir()  # a push in progress: no saved_model.pb yet
    (base / "not-a-version").mkdir()
    resolved, what = model_layout(str(base))
    assert resolved == newest and "newest" in what and str(base) in what
    # A Trainer Model artifact dir, <pipeline root>/Trainer/model/<id>/Format-Serving.
    artifact = tmp_path / "pipelines" / "cgd" / "Trainer" / "model" / "7"
    serving = _saved_model(artifact / "Format-Serving")
    resolved, what = model_layout(str(artifact))
    assert resolved == serving and "Trainer Model artifact" in what

    # One level too high: the error names the directory to pass.
    with pytest.raises(Exception, match=re.escape("--model " + str(artifact))):
        model_layout(str(artifact.parent))
    with pytest.raises(Exception, match=re.escape("--model " + str(base))):
        model_layout(str(tmp_path / "serving"))
    # Nothing recognisable: the path and the accepted layouts.
    with pytest.raises(Exception) as e:
        model_layout(str(tmp_path / "pipelines"))
    assert str(tmp_path / "pipelines") in str(e.value)
    assert "version" in str(e.value) and "base dir" in str(e.value) \
        and "Format-Serving" in str(e.value)
    (tmp_path / "empty" / "3").mkdir(parents=True)
    with pytest.raises(Exception, match="none of its versions"):
        model_layout(str(tmp_path / "empty"))


def test_missing_examples_name_the_path_and_the_demo_config(tmp_path, capsys, monkeypatch):
    # With a config: the path looked in (that config's pipeline root) and the way out.
    cfg = small_config(tmp_path / "run", tmp_path / "source")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg.to_dict()))
    assert cgd(["visualize", "data", "--config", str(other), "--out",
                str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert os.path.join(cfg.pipeline.root, cfg.pipeline.name,
                        "RetrievalExampleGen", "examples") in err
    assert "--config configs/demo.yaml" in err and str(other) in err
    assert not (tmp_path / "g.png").exists()

    # Without --config (as the README's examples after `make demo`): the packaged defaults'
    # path under ~, and the hint to pass the demo's config.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for command in (["visualize", "data"], ["analyze", "--model", _saved_model(tmp_path / "m")],
                    ["visualize", "rankings", "--model", str(tmp_path / "m")]):
        assert cgd(command) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert str(tmp_path / "home" / "cgd" / "pipelines") in err
        assert "no --config" in err and "--config configs/demo.yaml" in err


@pytest.mark.slow
def test_visualize_data_tiles_are_the_transformed_training_images(exported, tmp_path, capsys):
    cfg, _, config_path = exported
    out = tmp_path / "pics" / "grid.png"
    assert cgd(["visualize", "data", "--config", str(config_path), "--out", str(out),
                "--count", "10"]) == 0
    assert str(out) in capsys.readouterr().out
    size = cfg.transform.image_size
    plan = grid_layout(10, size)
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        # Widened for its title line when that is wider than the tiles, never narrowed.
        assert grid.size[1] == plan["size"][1] and grid.size[0] >= plan["size"][0]
        pixels = np.asarray(grid.convert("RGB"))
    tiles = [pixels[y:y + size, x:x + size] for x, y in plan["tiles"]]
    # Each tile is exactly one image of the Transform's output for the train split.
    transformed = latest_output(cfg, "Transform", "transformed_examples")
    train = sampler.load_image_set([os.path.join(transformed, "Split-train", "*.gz")], size)
    for tile in tiles:
        assert tile.shape == (size, size, 3)
        assert any(np.array_equal(tile, image) for image in train.images)
    assert len({tile.tobytes() for tile in tiles}) == 10  # distinct images
    # Tiles are apart (background between them), each with its label drawn below it.
    background = np.all(pixels == GRID_BACKGROUND, axis=-1)
    (x0, y0), (x1, _) = plan["tiles"][:2]
    assert x1 - x0 - size == GRID_GAP and background[y0:y0 + size, x0 + size:x1].all()
    for left, top, right, bottom in plan["labels"]:
        assert pixels[top:bottom, left:right].min() < 128


@pytest.mark.slow
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
    page = html.read_text()
    assert "rankings.png" in page and "image id (file name in the dataset)" in page
    assert "eval split" in page
    assert cgd(["visualize", "rankings", "--config", str(config_path), "--model",
                str(model_dir), "--queries", "0"]) == 1
    assert "--queries" in capsys.readouterr().err
