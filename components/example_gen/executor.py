"""Beam executor of RetrievalExampleGen: a dataset's files in, class-disjoint tf.Examples out.

The dataset's source (``components/datasets/<name>/source.py``: TFDS's own code for
Cars196 and SOP) parses the list and annotation files (cheap, in the driver process; no
image is opened) and ``sources`` assigns each image its retrieval split; Beam does the
heavy part in parallel: read every image, check that it decodes, normalise its box, build
the tf.Example, and write it, in the worker that built it, to its split's gzip TFRecords in
TFX's Examples layout (``Split-<name>/data_tfrecord-*.gz``). We then record the
ingestion counts on the artifact.

Unlike TFX's base executor, the examples are not shuffled through the runner before
writing (TFX's ``WriteSplit``): that moves every image through the orchestrating
process, which holds them all at once on the DirectRunner. The order is already random
(the records are spread over the workers by a hash) and no reader depends on it. JPEG
bytes do not compress, so the gzip files store them (``tfrecords.STORED``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from typing import Any

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor, utils, write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.datasets import records as R
from components.datasets.records import DatasetSourceError
from components.example_gen import examples, local_beam, sources, tfrecords

log = logging.getLogger(__name__)
SUMMARY_FILE = "ingestion_summary.json"
FILE_PREFIX = "data_tfrecord"  # TFX's name for ExampleGen's files


def split_rule_from_exec_properties(exec_properties: dict[str, Any]) -> dict:
    """The class-range rule packed in custom_config by the component."""
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    rule = json_format.MessageToDict(struct)
    # A Struct holds every number as a double: give back the integers.
    rule["source_options"] = sources.restore_options(rule["dataset"], rule["source_options"])
    for key in ("validation_classes", "min_classes", "min_queries"):
        rule[key] = int(rule[key])
    for key in ("train_classes", "eval_classes"):
        if rule.get(key) is not None:
            rule[key] = [int(v) for v in rule[key]]
    return rule


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """A retrieval dataset from its original local files, split by class."""

    def __init__(self, context=None):
        with local_beam.no_tfx_package_for_direct_runner(context):
            super().__init__(context)

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("retrieval datasets split by class: see GenerateExamplesByBeam")

    def _keyed_records(self, exec_properties: dict[str, Any]):
        """The driver's part: the source's records with their splits, and what was left out."""
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        # The driver has already substituted {SPAN}/{VERSION} in the pattern.
        pattern = input_config.splits[0].pattern
        source_dir = os.path.dirname(
            os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], pattern))
        rule = split_rule_from_exec_properties(exec_properties)
        dataset = rule["dataset"]
        log.info("RetrievalExampleGen: parsing the %s files in %s", dataset, source_dir)
        parsed = list(sources.iter_records(dataset, source_dir, self._get_tmp_dir(),
                                           rule["source_options"]))
        keyed, left_out = sources.assign_splits(parsed, rule)
        if not keyed:
            where = (f"the configured class ranges {rule['train_classes']} / "
                     f"{rule['eval_classes']}" if rule["train_classes"] else "any split")
            raise DatasetSourceError(
                f"no annotated image of {source_dir} falls in {where} ({dataset})")
        # Before any image is read: a split that cannot train or judge stops the run here.
        sources.check_split_sizes(keyed, rule, {r[R.CLASS_ID] for r in parsed})
        log.info("RetrievalExampleGen: %d annotated images to read (%d outside the configured "
                 "classes, %d single-image classes and %d queries without a gallery image "
                 "skipped), reading and encoding with Beam", len(keyed),
                 left_out.outside_classes, left_out.single_image_classes,
                 left_out.queries_without_gallery)
        return rule, keyed, left_out

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any],
                               parsed=None):
        """{split: PCollection of serialized tf.Examples}; ``parsed``: ``_keyed_records``'s
        result when the caller has it already."""
        rule, keyed, left_out = parsed or self._keyed_records(exec_properties)
        # Plain values only in what Beam ships to its workers (whose processes then import
        # neither TFX nor TensorFlow: examples.py).
        left = {"outside_classes": left_out.outside_classes,
                "single_image_classes": left_out.single_image_classes,
                "queries_without_gallery": left_out.queries_without_gallery}
        split_names = list(rule["output_splits"])
        # One element holding every record: beam.Create of the records themselves infers a
        # type for each of them when the pipeline is built (15 s for Cars196's 16,185).
        encoded = (
            pipeline
            | "Records" >> beam.Create([pickle.dumps(keyed, protocol=pickle.HIGHEST_PROTOCOL)],
                                       reshuffle=False)
            | "Unpack" >> beam.FlatMap(pickle.loads)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndEncode" >> beam.ParDo(examples.ReadAndEncode(rule["on_corrupt_image"]))
            .with_outputs(examples.ReadAndEncode.CORRUPT, main="examples"))
        # Counts per split and corrupt names, recorded on the artifact after the run.
        summary_path = os.path.join(self._get_tmp_dir(), SUMMARY_FILE)
        counts = (encoded.examples
                  | "SplitKeys" >> beam.Keys()
                  | "CountPerSplit" >> beam.combiners.Count.PerElement()
                  | "CountsToList" >> beam.combiners.ToList())
        corrupt = encoded[examples.ReadAndEncode.CORRUPT] | "CorruptToList" >> beam.combiners.ToList()
        (pipeline
         | "SummarySeed" >> beam.Create([None])
         | "WriteSummary" >> beam.Map(
             lambda _, c, bad: examples.write_json(
                 {"counts": dict(c), "corrupt": sorted(bad), **left}, summary_path),
             c=beam.pvalue.AsSingleton(counts), bad=beam.pvalue.AsSingleton(corrupt)))

        partitions = encoded.examples | "BySplit" >> beam.Partition(
            lambda kv, n: split_names.index(kv[0]), len(split_names))
        return {name: partitions[i] | f"Values[{name}]" >> beam.Values()
                for i, name in enumerate(split_names)}

    def Do(self, input_dict, output_dict, exec_properties):
        """TFX's ExampleGen ``Do`` (split names, payload and file format on the artifact),
        writing the splits without TFX's shuffle (module doc), then the ingestion counts."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        examples_artifact = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        examples_artifact.split_names = artifact_utils.encode_split_names(
            utils.generate_output_split_names(input_config, output_config))

        parsed = self._keyed_records(exec_properties)
        self._beam_pipeline_args = local_beam.args_for_input_size(
            self._beam_pipeline_args, len(parsed[1]))
        with self._make_beam_pipeline() as pipeline:
            splits = self.GenerateExamplesByBeam(pipeline, exec_properties, parsed)
            for name, split in splits.items():
                prefix = os.path.join(artifact_utils.get_split_uri(
                    output_dict[standard_component_specs.EXAMPLES_KEY], name), FILE_PREFIX)
                _ = split | f"WriteSplit[{name}]" >> tfrecords.WriteGzipTFRecords(
                    prefix, tfrecords.STORED)

        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
        for artifact in output_dict[standard_component_specs.EXAMPLES_KEY]:
            if payload_format:
                examples_utils.set_payload_format(artifact, payload_format)
            if file_format:
                examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))

        summary_path = os.path.join(self._get_tmp_dir(), SUMMARY_FILE)
        with tf.io.gfile.GFile(summary_path) as f:
            summary = json.load(f)
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
