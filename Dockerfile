# The gateway image: slim Python 3.11, non-root, the project without the engine extras (no vLLM, no torch).
# Build from the repository root:  docker build -t lora-gateway .
# Default command: apply migrations, then serve. With several replicas run migrations once instead
# (the compose file's `migrate` service, the Helm chart's pre-install/pre-upgrade Job) and start the
# replicas with the command `serve`: Alembic takes no lock, so replicas must not migrate concurrently.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
# Dependencies first (cached while only the code changes): the metadata is all pip needs to resolve them.
COPY pyproject.toml README.md ./
RUN mkdir -p gateway billing && touch gateway/__init__.py billing/__init__.py \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall -y lora-gateway \
    && rm -rf gateway billing build *.egg-info
COPY alembic.ini ./
COPY alembic ./alembic
COPY billing ./billing
COPY gateway ./gateway
# Editable: gateway/migrate.py finds alembic.ini and alembic/ beside the gateway package, i.e. in /app.
RUN /opt/venv/bin/pip install --no-deps -e . && /opt/venv/bin/python -m compileall -q gateway billing alembic

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9464 \
    GATEWAY_DATA_DIR=/data \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /data/adapters /tmp/prometheus-multiproc \
    && chown -R gateway:gateway /data /tmp/prometheus-multiproc
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9464
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8000') + '/readyz', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["migrate-and-serve"]
