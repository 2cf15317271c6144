"""`cgd serve`, `cgd embed` and `cgd index build` (cli.serving_commands) against the
embedded model server on the stand-in model (tests/support/serving.py)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal

import numpy as np
import pytest

from tests.support.serving import DEPLOY, DIM, MODEL, cgd_serve, make_images, write_gallery
from tests.support.serving import direct, images, models, server  # noqa: F401 - fixtures


@pytest.mark.slow
def test_cli_embed(server, images, direct, tmp_path, capsys):
    from cli.main import main
    paths = [str(p) for p in write_gallery(tmp_path / "g", images[:3])]
    args = ["embed", "--server", server.grpc_target, "--model-name", MODEL]
    assert main(args + paths) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == paths
    np.testing.assert_allclose(np.asarray([out[p] for p in paths], np.float32), direct(1, images[:3]),
                               atol=1e-6)
    assert main(args + ["--output", str(tmp_path / "e.npy")] + paths) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), direct(1, images[:3]), atol=1e-6)
    assert main(args + [str(tmp_path / "missing.jpg")]) == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["embed", "--server", server.grpc_target, "--model-name", "nope", paths[0]]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and server.grpc_target in err


@pytest.mark.slow
def test_cli_index_build_writes_a_gallery_index_of_the_served_model(models, server, tmp_path,
                                                                    capsys, caplog):
    """`cgd index build`: every image under the folder embedded by the served version (a
    corrupt one named once and skipped), into a search.index directory stamped with that
    version's fingerprint; --strict fails naming the file and writes nothing."""
    from cli.main import main
    from search.index import GalleryIndex, model_fingerprint
    caplog.set_level("INFO", logger="cgd")
    gallery = write_gallery(tmp_path / "gallery", make_images(20, seed=5))
    (tmp_path / "gallery" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "gallery" / "notes.txt").write_text("not an image")
    index = tmp_path / "out" / "gallery_index"
    common = ["--server", server.grpc_target, "--model-name", MODEL,
              "--model-base-path", str(models["base"])]
    assert main(["index", "build", *common, "--images", str(tmp_path / "gallery"),
                 "--out", str(index), "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert "indexed 20 of 21 images (1 skipped)" in caplog.text  # one summary line
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skips) == 1 and "broken.jpg" in skips[0]  # skipped once, named
    assert "not a decodable JPEG/PNG image" in skips[0]
    assert sorted(os.listdir(index.parent)) == ["gallery_index"]  # no temp directory left

    idx = GalleryIndex.load(str(index))
    assert idx.size == 20 and idx.dimension == DIM and idx.kind == "exact"
    assert (idx.model.name, idx.model.version) == (MODEL, "1")
    assert idx.model.fingerprint == model_fingerprint(str(models["base"] / MODEL / "1"))
    root = tmp_path / "gallery"
    assert sorted(idx.ids()) == sorted(str(p.relative_to(root)) for p in gallery)
    [hit] = idx.search(idx_query(server, gallery[7]), 1)[0]
    assert hit.id == str(gallery[7].relative_to(root))
    assert hit.metadata == {"path": str(gallery[7]), "class": gallery[7].parent.name}

    assert main(["index", "build", *common, "--images", str(tmp_path / "gallery"),
                 "--out", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "not a decodable JPEG/PNG image" in err
    assert not (tmp_path / "strict").exists()
    assert main(["index", "build", *common[:4], "--model-base-path", str(tmp_path),
                 "--images", str(tmp_path / "gallery"), "--out", str(tmp_path / "x")]) == 1
    assert "saved_model.pb does not exist" in capsys.readouterr().err


def idx_query(server, path) -> np.ndarray:
    from serving.client import EmbeddingClient
    with EmbeddingClient(server.grpc_target, MODEL) as client:
        return client.embed_files([str(path)])


@pytest.mark.slow
def test_cgd_serve_command_starts_answers_and_stops(models, tmp_path):
    """`cgd serve` in a subprocess: logs its ports, answers, exits cleanly on SIGTERM."""
    with cgd_serve("--model-base-path", str(models["base"]), "--model-name", MODEL, "--port",
                   "0", "--rest-port", "0", "--poll-seconds", "1", "--batching-parameters-file",
                   str(DEPLOY / "batching_parameters.txt")) as (proc, lines):
        ports = [int(m.group(1)) for line in lines
                 for m in [re.search(r"REST http://127\.0\.0\.1:(\d+)", line)] if m]
        assert ports, "".join(lines)
        assert "max 32 rows / 5.0 ms" in "".join(lines)
        conn = http.client.HTTPConnection("127.0.0.1", ports[-1], timeout=30)
        conn.request("GET", f"/v1/models/{MODEL}")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_serve_command_rejects_bad_paths(models, tmp_path, capsys):
    from cli.main import main
    assert main(["serve", "--model-base-path", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err
    # Passing the model directory itself (TF Serving's --model_base_path) is caught.
    assert main(["serve", "--model-base-path", str(models["base"] / MODEL), "--model-name", MODEL]) == 1
    assert "BASE/NAME/<version>" in capsys.readouterr().err


@pytest.mark.slow
def test_cgd_embed_skips_and_names_an_undecodable_file_strict_fails(server, images, direct,
                                                                    tmp_path, capsys, caplog):
    """As `cgd index build`: the good files are embedded, the bad one named (once), and
    --strict fails naming it instead."""
    from cli.main import main
    caplog.set_level("INFO", logger="cgd")
    paths = []
    for name, data in (("good.jpg", images[0]), ("notimage.jpg", b"text"),
                       ("good2.jpg", images[1])):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    common = ["embed", "--server", server.grpc_target, "--model-name", MODEL]
    assert main(common + paths) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [paths[0], paths[2]]
    np.testing.assert_allclose(np.asarray(list(out.values()), np.float32),
                               direct(1, [images[0], images[1]]), atol=1e-6)
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(skips) == 1 and paths[1] in skips[0] and "not a decodable JPEG/PNG image" in skips[0]
    assert "embed: 2 of 3 images" in caplog.text and f"not in the output: {paths[1]}" in caplog.text
    assert main(common + ["--output", str(tmp_path / "e.npy")] + paths) == 0
    assert np.load(tmp_path / "e.npy").shape == (2, DIM)

    assert main(common + ["--strict", "--output", str(tmp_path / "strict.npy")] + paths) == 1
    [line] = [l for l in capsys.readouterr().err.splitlines() if "error" in l]
    assert line.startswith(f"cgd embed: error: {paths[1]}: the server rejected the image")
    assert "good.jpg" not in line and "{{node" not in line
    assert not (tmp_path / "strict.npy").exists()
