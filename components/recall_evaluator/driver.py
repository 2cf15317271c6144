"""Local-orchestrator driver of the RecallEvaluator: puts production into the cache key.

The evaluator compares the candidate with the model in production, which lives
in the serving directory, outside anything TFX's cache key sees. Without this
driver a rerun with an unchanged candidate would reuse a verdict taken against
an older production model. The local launcher runs the driver before its cache
lookup and adds the returned execution property to the key.

Kubeflow Pipelines never runs TFX drivers: there the evaluator's task is
compiled with caching off instead (kubeflow/kfp_compat.py).
"""

from __future__ import annotations

from tfx.dsl.components.base import base_driver
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.proto.orchestration import driver_output_pb2

from components.recall_evaluator import constants, production


class ProductionModelDriver(base_driver.BaseDriver, ir_base_driver.BaseDriver):

    def __init__(self, metadata_handle):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        ir_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info) -> driver_output_pb2.DriverOutput:
        served = production.newest_served_version(
            execution_info.exec_properties[constants.SERVING_MODEL_DIR_KEY])
        result = driver_output_pb2.DriverOutput()
        result.exec_properties[constants.PRODUCTION_FINGERPRINT_KEY].string_value = (
            served.fingerprint if served else "")
        return result
