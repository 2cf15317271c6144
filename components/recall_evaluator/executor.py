"""RecallEvaluator executor: Do only; reading, embedding and pictures live in their own modules."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.evaluator import executor as stock_evaluator
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as keys
from tfx.utils import io_utils, path_utils

from components.recall_evaluator import (class_overlap, constants, embedding, production,
                                         ranking_picture)
from core.config import EvaluatorConfig

log = logging.getLogger(__name__)


class Executor(stock_evaluator.Executor):
    """Replaces the stock Evaluator's Do entirely.

    Subclassing the stock executor keeps TFX's Kubeflow V2 container treating it
    as an evaluator (it rewrites ``current_model_id`` to the artifact's name), so
    ``LatestBlessedModelStrategy`` still works for users who resolve on it.
    """

    def Do(self, input_dict, output_dict, exec_properties):
        ev = EvaluatorConfig(**json.loads(exec_properties[constants.EVALUATOR_JSON_KEY]))
        split = exec_properties[constants.EVAL_SPLIT_KEY]
        examples = artifact_utils.get_single_instance(input_dict[keys.EXAMPLES_KEY])
        model = artifact_utils.get_single_instance(input_dict[keys.MODEL_KEY])
        candidate_dir = path_utils.serving_model_path(model.uri)
        serving = production.newest_served_version(
            exec_properties[constants.SERVING_MODEL_DIR_KEY])
        candidate_is_baseline = (serving is not None and
                                 production.saved_model_fingerprint(candidate_dir)
                                 == serving.fingerprint)
        # A rerun served from the cache: the candidate itself is in production.
        baseline = None if candidate_is_baseline else serving
        blessing = artifact_utils.get_single_instance(output_dict[keys.BLESSING_KEY])
        evaluation = artifact_utils.get_single_instance(output_dict[keys.EVALUATION_KEY])
        log.info("RecallEvaluator: production model %s",
                 f"version {serving.version} ({serving.path})" if serving else
                 "none yet (the first model is judged on the threshold alone)")

        images, labels, ids, roles = embedding.read_eval_images(examples.uri, split)
        log.info("RecallEvaluator: %d images of %d classes in split '%s'%s", len(labels),
                 len(np.unique(labels)), split,
                 "" if roles is None else f" ({int(np.sum(roles == 'query'))} queries searched "
                                          f"in a gallery of {int(np.sum(roles != 'query'))})")
        embeddings = embedding.embed_with_signature(candidate_dir, images)
        base_embeddings = (embedding.embed_with_signature(baseline.path, images)
                           if baseline is not None else None)
        # The paired comparison only on eval classes neither model has seen (class_overlap.py).
        result, verdict = class_overlap.judge_fairly(
            ev, labels, embedding.read_class_names(examples.uri, split), embeddings,
            base_embeddings, candidate_is_baseline=candidate_is_baseline, roles=roles,
            production_seen=production.seen_classes(baseline.path) if baseline else None,
            candidate_seen=production.seen_classes(candidate_dir))
        result.update(blessed=verdict.blessed, reason=verdict.reason, split=split,
                      candidate_model=model.uri,
                      baseline_model=baseline.path if baseline is not None else None,
                      production_version=serving.version if serving else None)
        log.info("RecallEvaluator: %s", verdict.reason)

        io_utils.write_string_file(os.path.join(evaluation.uri, "metrics.json"),
                                   json.dumps(result, indent=1, sort_keys=True))
        io_utils.write_string_file(os.path.join(evaluation.uri, "verdict.txt"),
                                   verdict.reason + "\n")
        ranking_picture.write_rankings(evaluation.uri, embeddings, labels, images, ids,
                                       ev.ranking_queries, split=split, roles=roles,
                                       pad_value=ranking_picture.model_pad_value(candidate_dir))

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
