"""libjpeg's bare lines off `cgd serve`'s stderr (serving.stderr_filter): run in a
subprocess, because the filter works on file descriptor 2."""

from __future__ import annotations

import base64
import re
import signal

import pytest

from tests.support.serving import MODEL, cgd_serve, rest


@pytest.mark.slow
def test_cgd_serve_logs_a_rejected_jpeg_once_without_libjpegs_bare_lines(models, images):
    """libjpeg prints its errors straight to fd 2 ("Improper call to JPEG library in state
    201"); `cgd serve` drops those and logs one timestamped line per rejected request."""
    with cgd_serve("--model-base-path", str(models["base"]), "--model-name", MODEL,
                   "--port", "0", "--rest-port", "0") as (proc, lines):
        ports = [int(m.group(1)) for line in lines
                 for m in [re.search(r"REST http://127\.0\.0\.1:(\d+)", line)] if m]
        assert ports, "".join(lines)
        rest_port = ports[-1]
        server = type("Rest", (), {"rest_port": rest_port})
        truncated = images[0][:200]  # a JPEG header cut short: libjpeg's "state 201"
        assert truncated.startswith(b"\xff\xd8")
        for _ in range(2):
            status, body = rest(server, "POST", f"/v1/models/{MODEL}:predict",
                                {"instances": [{"b64": base64.b64encode(images[1]).decode()},
                                               {"b64": base64.b64encode(truncated).decode()}]})
            assert status == 400 and "row 1 (200 bytes)" in body["error"], body
        good = {"instances": [{"b64": base64.b64encode(images[0]).decode()}]}
        assert rest(server, "POST", f"/v1/models/{MODEL}:predict", good)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        lines += proc.stderr.readlines()
    log = "".join(lines)
    assert "JPEG library" not in log and "Corrupt JPEG" not in log, log
    rejected = [l for l in lines if "rejected a request" in l]
    assert len(rejected) == 2, log  # one per rejected request
    assert all(re.match(r"\d\d:\d\d:\d\d WARNING cgd.serving: rejected a request: input "
                        r"'images' row 1 \(200 bytes\) is not a decodable JPEG/PNG image$",
                        l.rstrip("\n")) for l in rejected), rejected
