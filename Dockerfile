# modelserve, CPU image. TF Serving's image conventions (tensorflow_serving/tools/docker/Dockerfile): gRPC on
# 8500, REST on 8501, the model at ${MODEL_BASE_PATH}/${MODEL_NAME} (defaults /models and model), and the
# arguments after the image name appended as flags. Unlike TF Serving's image it runs as a non-root user
# (uid 1000) under tini, so that `docker stop` drains the server. docs/deploy.md, "Container images" shows how to use it.
#
#   docker build -t modelserve .                                   # ONNX models (onnxruntime)
#   docker build -t modelserve:tf --build-arg EXTRAS=tensorflow .  # + TF SavedModels
#
# BASE_IMAGE: any Debian or Ubuntu image with apt (tests/test_image.py passes one built from scratch).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Versions come from the base image's release; pinning them would break on its next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/modelserve
# Dependencies first, into the virtual environment, in a layer that only pyproject.toml decides (the package
# is an empty stand-in here, removed again with its build folder); modelserve itself then goes into
# /opt/modelserve-app, which a .pth file puts on the environment's path. A change to modelserve's code so
# rebuilds, and ships, only that small folder. The build stage itself is not shipped.
ARG EXTRAS=""
COPY pyproject.toml README.md LICENSE /src/
RUN mkdir /src/modelserve && touch /src/modelserve/__init__.py \
    && /opt/modelserve/bin/pip install --no-warn-script-location "/src${EXTRAS:+[$EXTRAS]}" \
    && /opt/modelserve/bin/pip uninstall -y modelserve \
    && rm -rf /src/modelserve /src/build /src/*.egg-info \
    && /opt/modelserve/bin/python3 -c "import pathlib, sysconfig; \
pathlib.Path(sysconfig.get_path('purelib'), 'modelserve-app.pth').write_text('/opt/modelserve-app\n')"
COPY modelserve /src/modelserve
RUN /opt/modelserve/bin/pip install --no-warn-script-location --no-deps --target /opt/modelserve-app /src

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 modelserve \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modelserve \
    && mkdir -p /models
COPY --from=build /opt/modelserve /opt/modelserve
COPY --from=build /opt/modelserve-app /opt/modelserve-app
COPY deploy/docker/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
COPY deploy/docker/healthcheck.py /usr/lib/modelserve/healthcheck.py
ENV PATH=/opt/modelserve-app/bin:/opt/modelserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model
# gRPC, REST
EXPOSE 8500 8501
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# Readiness, not liveness: healthy once the models are loaded, unhealthy from the first moment of a drain.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/lib/modelserve/healthcheck.py"]
# tini is PID 1: it forwards SIGTERM/SIGINT to the server and reaps orphans; the entrypoint execs the server.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"]
