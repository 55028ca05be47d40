# The server and its workers (`dlopt serve`, `dlopt worker`): the engine, the server,
# the assignments (hidden suites, references): everything staff-side. Student code never
# runs here: workers start one sandbox container per submission (docker/runner.Dockerfile)
# through the Docker socket they are given.
#
#   docker build -f docker/server.Dockerfile -t dlopt-server:latest .                      # CPU
#   docker build -f docker/server.Dockerfile --build-arg BASE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime \
#                --build-arg TORCH= -t dlopt-server:gpu .                                     # GPU workers
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
# The CPU build of torch on CPU images; empty on GPU images (the base has its own).
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DLOPT_DATA_DIR=/var/lib/dlopt DLOPT_RUNNER=docker TMPDIR=/var/lib/dlopt/staging
WORKDIR /opt/dlopt
COPY pyproject.toml README.md constraints.txt ./
COPY autograder ./autograder
COPY client ./client
COPY reference ./reference
COPY server ./server
COPY assignments ./assignments
RUN if [ -n "$TORCH" ]; then python -m pip install $TORCH; fi \
 && python -m pip install -e ".[server,docker]" \
 && useradd --uid 1000 --create-home dlopt && mkdir -p /var/lib/dlopt/staging && chown -R dlopt /var/lib/dlopt
USER dlopt
EXPOSE 8000
CMD ["dlopt", "serve", "--host", "0.0.0.0", "--port", "8000"]
