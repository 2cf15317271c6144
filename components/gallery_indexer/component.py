"""GalleryIndexer: the candidate's gallery index, measured and gated; the model with its index.

Inputs: the candidate Model (the Trainer's), the RecallEvaluator's ModelBlessing, and the
raw Examples when ``gallery_index.gallery`` is "eval" (the eval split is the gallery).
Outputs: ``indexed_model``, the candidate's SavedModel with its index in
``assets.extra/gallery_index/`` (what the Pusher pushes: one version directory holds
both), a ModelBlessing the stock Pusher honours (the evaluator's AND the index's recall
floor), and a ModelEvaluation directory with metrics.json and verdict.txt.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.gallery_indexer import constants, driver, executor
from components.recall_evaluator import constants as evaluator_keys
from core.names import CODE_FINGERPRINT_KEY


class GalleryIndexerSpec(types.ComponentSpec):
    PARAMETERS = {
        # The gallery_index section (GalleryIndexConfig) as JSON: all it reads of the config.
        constants.GALLERY_INDEX_JSON_KEY: ExecutionParameter(type=str),
        CODE_FINGERPRINT_KEY: ExecutionParameter(type=str),
        evaluator_keys.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
        # <serving_dir>/<model_name>: its catalogue/ is folded into the gallery.
        evaluator_keys.SERVING_MODEL_DIR_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {
        constants.INDEXED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        keys.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
    }


class GalleryIndexer(base_component.BaseComponent):
    SPEC_CLASS = GalleryIndexerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    DRIVER_CLASS = driver.GalleryStateDriver

    def __init__(self, model, model_blessing, gallery_index_config: dict,
                 serving_model_dir: str, examples=None, code_fingerprint: str = "",
                 eval_split: str = "eval"):
        """``gallery_index_config``: the gallery_index section (``dataclasses.asdict`` of a
        GalleryIndexConfig); ``examples``: the raw Examples, when the gallery is "eval";
        ``serving_model_dir``: ``<serving_dir>/<model_name>``."""
        inputs = {keys.MODEL_KEY: model, keys.MODEL_BLESSING_KEY: model_blessing}
        if examples is not None:
            inputs[keys.EXAMPLES_KEY] = examples
        super().__init__(spec=GalleryIndexerSpec(
            **inputs,
            **{constants.GALLERY_INDEX_JSON_KEY: json.dumps(gallery_index_config, sort_keys=True),
               CODE_FINGERPRINT_KEY: code_fingerprint, evaluator_keys.EVAL_SPLIT_KEY: eval_split,
               evaluator_keys.SERVING_MODEL_DIR_KEY: serving_model_dir,
               constants.INDEXED_MODEL_KEY: types.Channel(type=standard_artifacts.Model),
               keys.BLESSING_KEY: types.Channel(type=standard_artifacts.ModelBlessing),
               keys.EVALUATION_KEY: types.Channel(type=standard_artifacts.ModelEvaluation)}))
