"""RetrievalExampleGen: TFX's file-based ExampleGen with our executor, for every dataset.

Being a FileBasedExampleGen gives us TFX's own driver: the input files are
fingerprinted (a changed archive invalidates the cache), and a ``{SPAN}``
pattern picks the newest span for scheduled retraining.
"""

from __future__ import annotations

from google.protobuf import any_pb2, struct_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.example_gen import executor


class RetrievalExampleGen(FileBasedExampleGen):
    """Ingests a dataset's original files (``data.dataset``, read by the source in
    ``sources.py``) into class-disjoint train/(valid/)eval splits.

    Args:
      source_dir: directory holding the dataset's files, or the parent of span
        directories when ``file_pattern`` contains ``{SPAN}``.
      split_rule: ``DataConfig.split_rule(evaluator)``: class ranges, hold-out, corrupt
        policy, the least a split needs to judge (evaluator.min_eval_classes, min_queries).
      file_pattern: files relative to ``source_dir``; e.g. ``span-{SPAN}/*``.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, source_dir: str, split_rule: dict, file_pattern: str = "*"):
        rule = struct_pb2.Struct()
        rule.update(split_rule)
        packed = any_pb2.Any()
        packed.Pack(rule)
        super().__init__(
            input_base=source_dir,
            # One input "split" holding all the files, under TFX's own neutral name
            # ("single_split"): the executor splits by class, not by input file.
            input_config=example_gen_utils.make_default_input_config(file_pattern),
            # One hash bucket each: only the names matter, the executor splits by class.
            output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in split_rule["output_splits"]])),
            custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
        )
