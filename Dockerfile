# The pgqueue image for docker-compose.yml: the package (its migrations inside) and the example app.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY pgqueue ./pgqueue
RUN pip install . && useradd --create-home --uid 10001 pgqueue

COPY examples ./examples
USER pgqueue

# The worker is PID 1's child under `init: true`; it handles SIGTERM itself and exits 0.
CMD ["pgqueue", "work", "examples.tasks:app"]
