"""Serving throughput and latency: gRPC through `cgd serve` vs a direct in-process SavedModel call.

Both run the same SavedModel signature (``serving_default``: encoded JPEG bytes
-> embedding) on the same images. The baseline calls the loaded signature in
this process; the served path is ``EmbeddingClient.embed_bytes`` (tensor
protos, gRPC, HTTP/2 on loopback) against `cgd serve` running in a separate
process, as in production. Cases: batch 1 and 32 images per request, 1 and 8
concurrent clients (threads, each with its own channel), plus 8 clients at
batch 1 with server-side batching on (max 32 rows, 2 ms). Reported: embeddings/s,
p50/p99 request latency, and the served/direct throughput ratio.

    python benchmarks/serving.py [--quick] [--model SAVED_MODEL_DIR] [--seconds 4]

Without --model, a stand-in model with the trainer's export contract is built
(decode, resize to 32x32, random projection to 128-d, L2 norm); its cost is
dominated by JPEG decoding, so the ratio shows the serving overhead at its
most visible. A real CGD model spends far longer in the network, which makes
the same absolute overhead a smaller fraction.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The installed `cgd` entry point, run with this interpreter.
CGD_MAIN = "import sys; from cli.main import main; sys.exit(main())"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from core.names import EMBEDDING_OUTPUT, IMAGES_INPUT, SERVING_SIGNATURE  # noqa: E402
from serving.standin import write_stand_in_model  # noqa: E402


def make_jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        h, w = size, int(size * rng.uniform(1.2, 1.6))  # car photos are wider than tall
        small = rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
        img = np.clip(img + rng.randn(h, w, 3) * 6, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def run_load(call, batches: list, clients: int, seconds: float, warmup: int = 3) -> dict:
    """``clients`` threads call ``call(batch)`` for ``seconds``; returns rate and latencies."""
    for i in range(warmup):
        call(batches[i % len(batches)])
    latencies, rows, errors = [], [0], []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(k):
        local, n = [], 0
        start_barrier.wait()
        i = k
        while not stop.is_set():
            batch = batches[i % len(batches)]
            t0 = time.perf_counter()
            try:
                call(batch)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                break
            local.append(time.perf_counter() - t0)
            n += len(batch)
            i += clients
        with lock:
            latencies.extend(local)
            rows[0] += n

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start_barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    lat = np.asarray(latencies) * 1000
    return {"emb_s": rows[0] / elapsed, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "requests": len(lat)}


class ServerProcess:
    """`cgd serve` in a subprocess on a free port; the bound port is read from its log."""

    def __init__(self, base: str, extra: list[str]):
        cmd = [sys.executable, "-c", CGD_MAIN, "serve", "--model-base-path", base,
               "--model-name", "cgd", "--port", "0", "--rest-port", "-1", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.target = None
        deadline = time.monotonic() + 120
        log = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"gRPC (127\.0\.0\.1:\d+)", line)
            if m:
                self.target = m.group(1)
            if "serve: ready" in line:
                break
        if not self.target:
            self.stop()
            raise RuntimeError("cgd serve did not start:\n" + "".join(log))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError):
        mem_gib = float("nan")
    return (f"{os.cpu_count()} CPU cores (nproc {len(os.sched_getaffinity(0))}), {cpu}, "
            f"{mem_gib:.0f} GiB RAM, Python {platform.python_version()}, TF {tf.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a SavedModel directory (default: the stand-in model)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per case")
    parser.add_argument("--image-size", type=int, default=240, help="JPEG height in pixels")
    parser.add_argument("--quick", action="store_true", help="1 s per case")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds

    from serving.client import EmbeddingClient

    tmp = tempfile.TemporaryDirectory(prefix="cgd-bench-serving-")
    base = os.path.join(tmp.name, "base")
    os.makedirs(os.path.join(base, "cgd"))
    version_dir = os.path.join(base, "cgd", "1")
    if args.model:
        os.symlink(os.path.abspath(args.model), version_dir)
        model_desc = args.model
    else:
        write_stand_in_model(version_dir)
        model_desc = "stand-in (decode, resize 32x32, 3072x128 projection, L2 norm)"
    images = make_jpegs(64, args.image_size)
    kb = np.mean([len(i) for i in images]) / 1024
    print(f"machine: {machine()}")
    print(f"model: {model_desc}; images: {len(images)} JPEGs, {args.image_size} px high, "
          f"{kb:.1f} KiB mean; {seconds:g} s per case")

    fn = tf.saved_model.load(version_dir).signatures[SERVING_SIGNATURE]

    def direct(batch):
        return fn(**{IMAGES_INPUT: tf.constant(batch, dtype=tf.string)})[EMBEDDING_OUTPUT].numpy()

    def batches(size):
        return [[images[(i * size + j) % len(images)] for j in range(size)] for i in range(16)]

    # Each served case runs right after its direct baseline, so that both see the
    # same background load on a shared machine.
    cases = [(1, 1), (1, 8), (32, 1), (32, 8)]
    rows = []
    t_start = time.perf_counter()

    def served(target, batch_size, clients):
        local = threading.local()
        opened = []

        def call(batch):
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = EmbeddingClient(target, "cgd", timeout_s=60,
                                                        batch_size=batch_size)
                opened.append(client)
            return client.embed_bytes(batch)

        try:
            return run_load(call, batches(batch_size), clients, seconds)
        finally:
            for c in opened:
                c.close()

    for label, extra, todo in (
            ("gRPC", [], cases),
            ("gRPC + server batching (32 rows, 2 ms)",
             ["--max-batch-size", "32", "--batch-timeout-ms", "2"], [(1, 8)])):
        server = ServerProcess(base, extra)
        try:
            for bs, clients in todo:
                d = run_load(direct, batches(bs), clients, seconds)
                r = served(server.target, bs, clients)
                rows.append((label, (bs, clients), r, d))
        finally:
            server.stop()
    total = time.perf_counter() - t_start

    print()
    header = ("| path | batch | clients | embeddings/s | p50 ms | p99 ms | direct embeddings/s | "
              "direct p50 ms | direct p99 ms | throughput served/direct |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (bs, clients), r, d in rows:
        print(f"| {label} | {bs} | {clients} | {r['emb_s']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{d['emb_s']:.0f} | {d['p50']:.2f} | {d['p99']:.2f} | {r['emb_s'] / d['emb_s']:.2f} |")
    print(f"\ntotal benchmark time {total:.0f} s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
