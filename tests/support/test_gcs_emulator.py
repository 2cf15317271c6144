"""The emulated GCS and KFP's object-store transfers: the boundary the gs:// runs rely on."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.gcs_emulator import GcsEmulator, ObjectStore
from tests.support.kfp_emulator import KfpEmulator

# Slow tier: the GCS and KFP stand-ins, and TensorFlow in a subprocess.
pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    emulator = KfpEmulator(tmp_path / "cluster")
    emulator.stores["gs://"].create_bucket("b")
    yield emulator
    emulator.close()


def test_tensorflows_own_gcs_filesystem_leaves_a_marker_for_every_directory_it_creates(tmp_path):
    store = ObjectStore(tmp_path / "gcs")
    code = ("import tensorflow as tf\n"
            "tf.io.gfile.makedirs('gs://b/root/Trainer/model/Format-Serving')\n"
            "with tf.io.gfile.GFile('gs://b/root/Trainer/model/Format-Serving/saved_model.pb',"
            " 'w') as f:\n    f.write('pb')\n"
            "print(tf.io.gfile.listdir('gs://b/root/Trainer/model'))\n")
    with GcsEmulator(store, tmp_path / "tls", buckets=("b",)) as gcs:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, **gcs.environment()), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "['Format-Serving/']" in proc.stdout
    assert store.names("b") == ["root/", "root/Trainer/", "root/Trainer/model/",
                                "root/Trainer/model/Format-Serving/",
                                "root/Trainer/model/Format-Serving/saved_model.pb"]
    assert store.get("b", "root/Trainer/model/") == b""


def test_the_launcher_downloads_a_marker_as_a_file_and_then_cannot_make_the_directory(
        cluster, tmp_path):
    store = cluster.stores["gs://"]
    for name, data in (("r/model/", b""), ("r/model/variables/", b""),
                       ("r/model/variables/v.index", b"ix"), ("r/model/saved_model.pb", b"pb")):
        store.put("b", name, data)
    with pytest.raises(OSError, match=r'downloadFile\(\): unable to complete copying '
                                      r'"r/model/saved_model.pb".*mkdir .*/model: not a directory'):
        cluster._download_blob("gs://b/r/model", tmp_path / "pod/gcs/b/r/model")
    assert (tmp_path / "pod/gcs/b/r/model").is_file()  # the marker, written as a file


def test_without_markers_the_download_is_the_artifact_and_uploads_write_files_only(
        cluster, tmp_path):
    local = tmp_path / "pod/gcs/b/r/model"
    (local / "variables").mkdir(parents=True)
    (local / "variables/v.index").write_bytes(b"ix")
    (local / "saved_model.pb").write_bytes(b"pb")
    (local / "assets").mkdir()  # an empty directory: nothing to upload, no marker
    cluster._upload_blob(local, "gs://b/r/model")
    assert cluster.stores["gs://"].names("b") == ["r/model/saved_model.pb",
                                                  "r/model/variables/v.index"]
    copy = cluster.download("gs://b/r/model")
    assert (copy / "saved_model.pb").read_bytes() == b"pb"
    assert (copy / "variables/v.index").read_bytes() == b"ix"
    cluster._upload_blob(tmp_path / "absent", "gs://b/r/nothing")  # allowed, uploads nothing
    assert cluster.stores["gs://"].names("b", "r/nothing") == []


def test_the_emulator_proxies_only_googles_storage_hosts(tmp_path):
    import http.client

    with GcsEmulator(ObjectStore(tmp_path / "gcs"), tmp_path / "tls") as gcs:
        port = int(gcs.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("CONNECT", "example.com:443")
        assert conn.getresponse().status == 403
