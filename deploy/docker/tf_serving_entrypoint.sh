#!/bin/sh
# TF Serving's /usr/bin/tf_serving_entrypoint.sh (tensorflow_serving/tools/docker/Dockerfile), flag for flag:
# the ports, the model named by MODEL_NAME under MODEL_BASE_PATH, then the `docker run IMAGE ...` arguments,
# appended so that they add flags or override these (the last of a repeated flag wins, as in TF Serving).
# One change: `exec`, so that the server replaces this shell. tini (PID 1) then signals the server itself:
# SIGTERM drains it, and its exit status becomes the container's.
exec modelserve --port=8500 --rest_api_port=8501 \
    --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" \
    "$@"
