"""RecallEvaluator executor: embed the eval split through the exported signature."""

from __future__ import annotations

import glob
import io
import json
import logging
import os

import numpy as np
import tensorflow as tf
from PIL import Image
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.evaluator import executor as stock_evaluator
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.recall_evaluator import constants, production
from components.recall_evaluator.verdict import bless
from core.names import EMBEDDING_OUTPUT, IMAGES_INPUT, SERVING_SIGNATURE
from core.config import config_from_dict

log = logging.getLogger(__name__)
EMBED_BATCH = 64
THUMB = 96


def read_eval_images(examples_uri: str, split: str) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Encoded image bytes, 0-based labels and ids of one split of raw Examples."""
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no examples in split '{split}' under {examples_uri}")
    images, labels, ids = [], [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        images.append(feature["image"].bytes_list.value[0])
        labels.append(feature["label"].int64_list.value[0])
        ids.append(feature["image_id"].bytes_list.value[0].decode())
    return images, np.asarray(labels, np.int64), ids


def embed_with_signature(model_dir: str, images: list[bytes]) -> np.ndarray:
    """[N, D] embeddings from the SavedModel's serving_default signature (what is served)."""
    signature = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        batch = tf.constant(images[start:start + EMBED_BATCH])
        out.append(signature(**{IMAGES_INPUT: batch})[EMBEDDING_OUTPUT].numpy())
        log.info("embedded %d/%d eval images", min(start + EMBED_BATCH, len(images)),
                 len(images))
    return np.concatenate(out)


def _thumbnail(image_bytes: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.resize((THUMB, THUMB), Image.BILINEAR))


def write_rankings(out_dir: str, embeddings, labels, images, ids, queries: int, k: int = 8):
    """The seed's ranking picture: a row per query, its top-k, matches marked."""
    from components.recall_evaluator import metrics, ranking_picture
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(labels), size=min(queries, len(labels)), replace=False))
    index, distance = metrics.nearest_neighbours(
        embeddings, embeddings, k=min(k, len(labels) - 1), exclude_self=True)
    index, distance = index[chosen], distance[chosen]
    return ranking_picture.render_rankings(
        query_images=[_thumbnail(images[q]) for q in chosen],
        neighbour_images=[[_thumbnail(images[j]) for j in row] for row in index],
        matches=[[bool(labels[j] == labels[q]) for j in row] for q, row in zip(chosen, index)],
        out_png=os.path.join(out_dir, "rankings.png"),
        out_html=os.path.join(out_dir, "rankings.html"),
        titles={"query_ids": [ids[q] for q in chosen],
                "neighbour_ids": [[ids[j] for j in row] for row in index],
                "distances": distance.tolist()})


class Executor(stock_evaluator.Executor):
    """Replaces the stock Evaluator's Do entirely.

    Subclassing the stock executor keeps TFX's Kubeflow V2 container treating it
    as an evaluator (it rewrites ``current_model_id`` to the artifact's name), so
    ``LatestBlessedModelStrategy`` still works for users who resolve on it.
    """

    def Do(self, input_dict, output_dict, exec_properties):
        from components.recall_evaluator import metrics
        values = json.loads(exec_properties[constants.CONFIG_JSON_KEY])
        values.pop("code", None)  # cache key only (pipeline.code_fingerprint)
        cfg = config_from_dict(values, "RecallEvaluator")
        ev = cfg.evaluator
        split = exec_properties[constants.EVAL_SPLIT_KEY]
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        candidate_dir = path_utils.serving_model_path(model.uri)
        serving = production.newest_served_version(
            exec_properties[constants.SERVING_MODEL_DIR_KEY])
        candidate_is_baseline = (serving is not None and
                                 production.saved_model_fingerprint(candidate_dir)
                                 == serving.fingerprint)
        # A rerun served from the cache: the candidate itself is in production.
        baseline = None if candidate_is_baseline else serving
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        log.info("RecallEvaluator: production model %s",
                 f"version {serving.version} ({serving.path})" if serving else
                 "none yet (the first model is judged on the threshold alone)")

        images, labels, ids = read_eval_images(examples.uri, split)
        log.info("RecallEvaluator: %d images of %d classes in split '%s'", len(labels),
                 len(np.unique(labels)), split)
        embeddings = embed_with_signature(candidate_dir, images)
        result = {"candidate": metrics.retrieval_metrics(
            embeddings, labels, ks=tuple(ev.recall_ks), block_size=ev.block_size)}
        if baseline is not None:
            base_embeddings = embed_with_signature(baseline.path, images)
            result["baseline"] = metrics.retrieval_metrics(
                base_embeddings, labels, ks=tuple(ev.recall_ks), block_size=ev.block_size)
        verdict = bless(result["candidate"]["recall@1"], ev.recall_threshold,
                        result["baseline"]["recall@1"] if baseline is not None else None,
                        ev.baseline_tolerance, candidate_is_baseline)
        result.update(blessed=verdict.blessed, reason=verdict.reason, split=split,
                      candidate_model=model.uri,
                      baseline_model=baseline.path if baseline is not None else None,
                      production_version=serving.version if serving else None)
        log.info("RecallEvaluator: %s", verdict.reason)

        io_utils.write_string_file(os.path.join(evaluation.uri, "metrics.json"),
                                   json.dumps(result, indent=1, sort_keys=True))
        io_utils.write_string_file(os.path.join(evaluation.uri, "verdict.txt"),
                                   verdict.reason + "\n")
        write_rankings(evaluation.uri, embeddings, labels, images, ids, ev.ranking_queries)

        # What the stock Pusher (and LatestBlessedModelStrategy) read.
        blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                         int(verdict.blessed))
        blessing.set_string_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if baseline is not None:
            blessing.set_string_custom_property(
                evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.path)
            blessing.set_int_custom_property("baseline_version", baseline.version)
        blessing.set_string_custom_property("reason", verdict.reason)
        io_utils.write_string_file(os.path.join(
            blessing.uri, evaluator_constants.BLESSED_FILE_NAME if verdict.blessed
            else evaluator_constants.NOT_BLESSED_FILE_NAME), "")
