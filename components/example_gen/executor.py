"""Beam executor of RetrievalExampleGen: a dataset's files in, class-disjoint tf.Examples out.

The dataset's source (``sources.SOURCE_MODULES``: TFDS's own code for Cars196 and SOP)
parses the list and annotation files (cheap, in the driver process) and ``sources``
assigns each image its retrieval split; Beam does the heavy part in parallel: read every
image, check that it decodes, build the tf.Example. The base ExampleGen executor writes
the splits as gzip TFRecords in TFX's Examples layout; we then record the ingestion
counts on the artifact.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.datasets.records import DatasetSourceError
from components.example_gen import examples, sources

log = logging.getLogger(__name__)
SUMMARY_FILE = "ingestion_summary.json"


def split_rule_from_exec_properties(exec_properties: dict[str, Any]) -> dict:
    """The class-range rule packed in custom_config by the component."""
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    rule = json_format.MessageToDict(struct)
    # A Struct holds every number as a double: give back the integers.
    options = rule["source_options"]
    if "split_seed" in options:
        options["split_seed"] = int(options["split_seed"])
    rule["validation_classes"] = int(rule["validation_classes"])
    return rule


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """A retrieval dataset from its original local files, split by class."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("retrieval datasets split by class: see GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]):
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        # The driver has already substituted {SPAN}/{VERSION} in the pattern.
        pattern = input_config.splits[0].pattern
        source_dir = os.path.dirname(
            os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], pattern))
        rule = split_rule_from_exec_properties(exec_properties)
        work_dir = self._get_tmp_dir()

        dataset = rule["dataset"]
        log.info("RetrievalExampleGen: parsing the %s files in %s", dataset, source_dir)
        keyed, left_out = sources.assign_splits(
            sources.iter_records(dataset, source_dir, work_dir, rule["source_options"]), rule)
        if not keyed:
            where = (f"the configured class ranges {rule['train_classes']} / "
                     f"{rule['eval_classes']}" if rule["train_classes"] else "any split")
            raise DatasetSourceError(
                f"no annotated image of {source_dir} falls in {where} ({dataset})")
        log.info("RetrievalExampleGen: %d annotated images to read (%d outside the configured "
                 "classes, %d single-image classes and %d queries without a gallery image "
                 "skipped), reading and encoding with Beam", len(keyed),
                 left_out.outside_classes, left_out.single_image_classes,
                 left_out.queries_without_gallery)
        dropped = left_out.outside_classes

        split_names = list(rule["output_splits"])
        encoded = (
            pipeline
            | "Records" >> beam.Create(keyed, reshuffle=False)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndEncode" >> beam.ParDo(examples.ReadAndEncode(rule["on_corrupt_image"]))
            .with_outputs(examples.ReadAndEncode.CORRUPT, main="examples"))
        # Counts per split and corrupt names, recorded on the artifact after the run.
        summary_path = os.path.join(work_dir, SUMMARY_FILE)
        counts = (encoded.examples
                  | "SplitKeys" >> beam.Keys()
                  | "CountPerSplit" >> beam.combiners.Count.PerElement()
                  | "CountsToList" >> beam.combiners.ToList())
        corrupt = encoded[examples.ReadAndEncode.CORRUPT] | "CorruptToList" >> beam.combiners.ToList()
        (pipeline
         | "SummarySeed" >> beam.Create([None])
         | "WriteSummary" >> beam.Map(
             lambda _, c, bad: examples.write_json(
                 {"counts": dict(c), "corrupt": sorted(bad), "outside_classes": dropped,
                  "single_image_classes": left_out.single_image_classes,
                  "queries_without_gallery": left_out.queries_without_gallery},
                 summary_path),
             c=beam.pvalue.AsSingleton(counts), bad=beam.pvalue.AsSingleton(corrupt)))

        partitions = encoded.examples | "BySplit" >> beam.Partition(
            lambda kv, n: split_names.index(kv[0]), len(split_names))
        return {name: partitions[i] | f"Values[{name}]" >> beam.Values()
                for i, name in enumerate(split_names)}

    def Do(self, input_dict, output_dict, exec_properties):
        super().Do(input_dict, output_dict, exec_properties)
        summary_path = os.path.join(self._get_tmp_dir(), SUMMARY_FILE)
        with tf.io.gfile.GFile(summary_path) as f:
            summary = json.load(f)
        examples_artifact = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        for split in artifact_utils.decode_split_names(examples_artifact.split_names):
            examples_artifact.set_int_custom_property(
                f"num_examples_{split}", int(summary["counts"].get(split, 0)))
        examples_artifact.set_int_custom_property("corrupt_images", len(summary["corrupt"]))
        for key in ("single_image_classes", "queries_without_gallery"):
            examples_artifact.set_int_custom_property(key, int(summary[key]))
        examples_artifact.set_string_custom_property("corrupt_files", ",".join(summary["corrupt"]))
        log.info("RetrievalExampleGen: wrote %s; skipped %d corrupt image(s)%s",
                 ", ".join(f"{s}={n}" for s, n in sorted(summary["counts"].items())),
                 len(summary["corrupt"]),
                 (": " + ", ".join(summary["corrupt"])) if summary["corrupt"] else "")
