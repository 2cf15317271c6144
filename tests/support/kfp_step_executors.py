"""Two tiny TFX executors, run as a Kubeflow step by the entrypoint tests."""
from __future__ import annotations

import os

from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio


class WritesItsOutput(base_executor.BaseExecutor):
    """Finishes: one file in its `examples` output."""

    def Do(self, input_dict, output_dict, exec_properties):
        uri = output_dict["examples"][0].uri
        fileio.makedirs(uri)
        with fileio.open(os.path.join(uri, "done.txt"), "w") as f:
            f.write("done")


class Raises(base_executor.BaseExecutor):
    """Fails with an error of its own."""

    def Do(self, input_dict, output_dict, exec_properties):
        raise ValueError("the executor's own error: no usable images in the split")
