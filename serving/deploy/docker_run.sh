#!/usr/bin/env bash
# Serve the Pusher's output with the official TensorFlow Serving image.
#
#   serving/deploy/docker_run.sh [SERVING_DIR]
#
# SERVING_DIR is the pipeline's serving_dir (pipeline.serving_dir in the config,
# default ~/cgd/serving); the Pusher writes SERVING_DIR/cgd/<version>/. It is
# mounted read-only at /models/cgd, this directory's configs at /config.
# gRPC on :8500, REST on :8501 (GET /v1/models/cgd is the readiness check),
# Prometheus metrics at :8501/monitoring/prometheus/metrics.
# CGD_MODEL_CONFIG=models_search.config keeps the previous version loaded, as the search
# service beside it (`cgd search-serve --embedding-server localhost:8500`) needs.
set -euo pipefail

SERVING_DIR="${1:-${CGD_SERVING_DIR:-$HOME/cgd/serving}}"
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_CONFIG="${CGD_MODEL_CONFIG:-models.config}"
if [[ ! -f "$DEPLOY_DIR/$MODEL_CONFIG" ]]; then
  echo "docker_run.sh: $DEPLOY_DIR/$MODEL_CONFIG does not exist (CGD_MODEL_CONFIG)" >&2
  exit 1
fi
if [[ ! -d "$SERVING_DIR/cgd" ]]; then
  echo "docker_run.sh: $SERVING_DIR/cgd does not exist (no model pushed yet?)" >&2
  exit 1
fi

exec docker run --rm --name cgd-serving \
  -p 8500:8500 -p 8501:8501 \
  --mount "type=bind,source=$SERVING_DIR/cgd,target=/models/cgd,readonly" \
  --mount "type=bind,source=$DEPLOY_DIR,target=/config,readonly" \
  tensorflow/serving:2.16.1 \
  --model_config_file="/config/$MODEL_CONFIG" \
  --model_config_file_poll_wait_seconds=60 \
  --file_system_poll_wait_seconds=2 \
  --enable_batching=true \
  --batching_parameters_file=/config/batching_parameters.txt \
  --monitoring_config_file=/config/monitoring.config
