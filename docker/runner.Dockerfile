# The sandbox image: one container of it per submission (autograder/sandbox/docker.py).
# Python, PyTorch, Triton and NumPy, nothing of the course: the child's runtime (the
# protocol and child packages, the assignment's harness) is mounted read-only at
# /sandbox when the container starts, and hidden suites, masters and references never
# enter it. The runner starts it with no network, a read-only root, a tmpfs at /tmp, all
# capabilities dropped, no new privileges, as uid 61000, with the GPU passed by a
# device request.
#
#   docker build -f docker/runner.Dockerfile -t dlopt-runner:latest .
ARG BASE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Triton is in the base image; numpy for student code that uses it.
RUN python -m pip install "numpy>=1.26" \
 && groupadd --gid 61000 student && useradd --uid 61000 --gid 61000 --no-create-home --shell /usr/sbin/nologin student \
 && mkdir -p /sandbox /io && chmod 0755 /sandbox && chmod 0777 /io \
 && rm -rf /root/.cache
RUN python -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__)"
USER 61000:61000
WORKDIR /tmp
CMD ["python3", "-c", "print('dlopt sandbox image: started by the docker runner, not by hand')"]
