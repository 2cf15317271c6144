"""GalleryIndexer executor: Do only; reading, recall and the verdict live in their own modules,
the index itself in search/index.py."""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as keys
from tfx.utils import io_utils, path_utils

from components.gallery_indexer import constants, gallery, recall, verdict
from components.recall_evaluator import constants as evaluator_keys
from components.recall_evaluator import embedding
from core.config import GalleryIndexConfig
from core.names import INDEX_DIR
from search.index import GalleryIndex, ModelStamp, model_fingerprint

log = logging.getLogger(__name__)


def index_dir(saved_model_dir: str) -> str:
    """Where a SavedModel keeps the index built with it: ``assets.extra/gallery_index``."""
    return os.path.join(saved_model_dir, "assets.extra", INDEX_DIR)


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict, output_dict, exec_properties):
        config = GalleryIndexConfig(**json.loads(exec_properties[constants.GALLERY_INDEX_JSON_KEY]))
        serving_model_dir = exec_properties[evaluator_keys.SERVING_MODEL_DIR_KEY]
        model = artifact_utils.get_single_instance(input_dict[keys.MODEL_KEY])
        upstream = artifact_utils.get_single_instance(input_dict[keys.MODEL_BLESSING_KEY])
        examples = input_dict.get(keys.EXAMPLES_KEY)
        indexed = artifact_utils.get_single_instance(output_dict[constants.INDEXED_MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[keys.BLESSING_KEY])
        evaluation = artifact_utils.get_single_instance(output_dict[keys.EVALUATION_KEY])
        candidate_dir = path_utils.serving_model_path(model.uri)
        evaluator_blessed = model_utils.is_model_blessed(upstream)
        evaluator_reason = (upstream.get_string_custom_property("reason")
                            if upstream.has_custom_property("reason") else "")
        result = {"evaluator_blessed": evaluator_blessed, "evaluator_reason": evaluator_reason,
                  "candidate_model": model.uri, "gallery": {"source": config.gallery}}

        if not evaluator_blessed:
            # The Pusher will not push it: embedding a large gallery would buy nothing.
            decision = verdict.bless(False, evaluator_reason)
        else:
            self._index(config, serving_model_dir, candidate_dir,
                        examples[0].uri if examples else None,
                        exec_properties[evaluator_keys.EVAL_SPLIT_KEY],
                        path_utils.serving_model_path(indexed.uri), result)
            decision = verdict.bless(True, evaluator_reason, recall=result["ann_recall"]["recall"],
                                     k=result["ann_recall"]["k"], floor=config.recall_floor,
                                     kind=result["index"]["kind"], size=result["index"]["size"])
        result.update(blessed=decision.blessed, reason=decision.reason)
        log.info("GalleryIndexer: %s", decision.reason)

        io_utils.write_string_file(os.path.join(evaluation.uri, constants.METRICS_FILE),
                                   json.dumps(result, indent=1, sort_keys=True))
        io_utils.write_string_file(os.path.join(evaluation.uri, constants.VERDICT_FILE),
                                   decision.reason + "\n")
        # What the stock Pusher reads (`blessed`), as the RecallEvaluator writes it.
        blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                         int(decision.blessed))
        blessing.set_string_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, indexed.uri)
        blessing.set_string_custom_property("reason", decision.reason)
        if "ann_recall" in result:
            blessing.set_float_custom_property("index_recall", result["ann_recall"]["recall"])
        io_utils.write_string_file(os.path.join(
            blessing.uri, evaluator_constants.BLESSED_FILE_NAME if decision.blessed
            else evaluator_constants.NOT_BLESSED_FILE_NAME), "")

    @staticmethod
    def _index(config: GalleryIndexConfig, serving_model_dir: str, candidate_dir: str,
               examples_uri, split: str, output_dir: str, result: dict) -> None:
        """Embeds the gallery, builds and measures the index, writes the indexed model."""
        rows = gallery.with_catalogue(gallery.read(config.gallery, examples_uri, split),
                                      serving_model_dir)
        indexed_rows = rows.indexed
        if indexed_rows.size < 2:
            raise ValueError(f"gallery_index.gallery {config.gallery!r}: {indexed_rows.size} "
                             "gallery item(s); an index needs at least 2 to be measured")
        queries = int(np.sum(rows.roles != gallery.GALLERY))
        log.info("GalleryIndexer: %d gallery items (%d from the catalogue), %d queries",
                 indexed_rows.size, rows.catalogue_items, queries)
        embeddings = embedding.embed_with_signature(candidate_dir, rows.images)
        stamp = ModelStamp(name=os.path.basename(serving_model_dir.rstrip("/")),
                           fingerprint=model_fingerprint(candidate_dir),
                           dimension=int(embeddings.shape[1]))
        start = time.monotonic()
        index = GalleryIndex.build(embeddings[indexed_rows],
                                   [rows.ids[i] for i in indexed_rows],
                                   [rows.metadata[i] for i in indexed_rows], config, stamp)
        index.catalogue_seq = rows.catalogue_seq
        build_seconds = time.monotonic() - start

        k = min(config.recall_k, index.size - 1)
        ann = index.recall_against_exact(k=k, queries=config.recall_queries, seed=config.seed)
        ks = sorted({1, k})
        if recall.num_queries(rows.labels, rows.roles):
            end_to_end = {"index": recall.through_index(index.search, embeddings, rows.ids,
                                                        rows.labels, rows.roles, ks),
                          "exact": recall.exact(embeddings, rows.labels, rows.roles, ks)}
        else:
            end_to_end = {"skipped": "no query has another gallery item of its class (a CSV "
                                     "without a class_name column, or one image a class): "
                                     "Recall@K against labels is undefined"}

        # The candidate as the Trainer wrote it, with its index inside: one directory, so
        # the Pusher publishes model and index as one version (saved_model.pb copied last).
        io_utils.copy_dir(candidate_dir, output_dir)
        index.save(index_dir(output_dir))
        result["gallery"].update(
            size=int(indexed_rows.size), queries=queries,
            catalogue_items=rows.catalogue_items, catalogue_seq=rows.catalogue_seq)
        result["index"] = {"kind": index.kind, "size": index.size,
                           "dimension": index.dimension, "build_seconds": build_seconds,
                           "model": {"name": stamp.name, "fingerprint": stamp.fingerprint},
                           "path": index_dir(output_dir)}
        result["ann_recall"] = {"k": k, "queries": min(config.recall_queries, index.size),
                                "recall": float(ann), "floor": config.recall_floor}
        result["end_to_end"] = end_to_end
