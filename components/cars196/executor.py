"""Beam executor of Cars196ExampleGen: TFDS parsing in, class-disjoint tf.Examples out.

TFDS's cars196 code parses the annotations (cheap, in the driver process);
Beam does the heavy part in parallel: read every image, check that it
decodes, build the tf.Example, route it to its retrieval split by class. The
base ExampleGen executor writes the splits as gzip TFRecords in TFX's
Examples layout; we then record the ingestion counts on the artifact.
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

from components.cars196 import examples, tfds_source
from core.config import retrieval_split

log = logging.getLogger(__name__)
SUMMARY_FILE = "ingestion_summary.json"


def split_rule_from_exec_properties(exec_properties: dict[str, Any]) -> dict:
    """The class-range rule packed in custom_config by the component."""
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Cars196 from local archives via TFDS, split by class for retrieval."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("Cars196 splits by class: see GenerateExamplesByBeam")

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

        log.info("Cars196ExampleGen: parsing annotations in %s with TFDS's cars196 builder",
                 source_dir)
        keyed, dropped = [], 0
        for record in tfds_source.iter_records(source_dir, work_dir):
            split = retrieval_split(record["class_id"] + 1, rule["train_classes"],
                                    rule["eval_classes"], rule["validation_classes"])
            if split is None:
                dropped += 1
            else:
                keyed.append((split, record))
        if not keyed:
            raise tfds_source.Cars196SourceError(
                f"no annotated image of {source_dir} falls in the configured class ranges "
                f"{rule['train_classes']} / {rule['eval_classes']}")
        log.info("Cars196ExampleGen: %d annotated images in the configured classes "
                 "(%d outside them), reading and encoding with Beam", len(keyed), dropped)

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
                 {"counts": dict(c), "corrupt": sorted(bad), "outside_classes": dropped},
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
        examples_artifact.set_string_custom_property("corrupt_files", ",".join(summary["corrupt"]))
        log.info("Cars196ExampleGen: wrote %s; skipped %d corrupt image(s)%s",
                 ", ".join(f"{s}={n}" for s, n in sorted(summary["counts"].items())),
                 len(summary["corrupt"]),
                 (": " + ", ".join(summary["corrupt"])) if summary["corrupt"] else "")
