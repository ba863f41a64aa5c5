# CRS grading CDS Hooks service: slim Python, non-root, health-checked.
# Build: docker build -t crs-cds .   Run: see README.md ("Container").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_hooks ./cds_hooks
COPY mappings ./mappings
# With the PostgreSQL driver: several replicas (deploy/) share one PostgreSQL store.
RUN pip install '.[postgres]' \
    && useradd --system --create-home --uid 10001 crs \
    && mkdir -p /data && chown crs /data

USER crs
WORKDIR /data
ENV CRS_CDS_HOST=0.0.0.0 \
    CRS_CDS_PORT=8080
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

CMD ["crs-cds", "serve", "--host", "0.0.0.0", "--port", "8080"]
