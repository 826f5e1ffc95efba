# The Pagoda operator: `pagoda operator` (kopf). No torch: only pagoda[operator].
# Build context from images/build.sh (deps/ and pagoda/ wheels, no network during the build):
#   images/build.sh operator
#   BASE_IMAGE=python:3.11-slim-bookworm images/build.sh operator
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN --mount=type=bind,source=deps,target=/deps \
    python3 -m venv /opt/pagoda \
 && /opt/pagoda/bin/pip install --no-cache-dir --no-index --find-links /deps -r /deps/requirements.txt
RUN --mount=type=bind,source=pagoda,target=/pagoda \
    /opt/pagoda/bin/pip install --no-cache-dir --no-index --no-deps /pagoda/*.whl \
 && /opt/pagoda/bin/pip check \
 && /opt/pagoda/bin/python -c "import pagoda.operator"
ENV PATH=/opt/pagoda/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# A named user: kopf (getpass.getuser) and others look the uid up in /etc/passwd.
RUN echo 'pagoda:x:65532:65532:pagoda:/tmp:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'pagoda:x:65532:' >>/etc/group
USER 65532:65532
# For docker and compose (Kubernetes uses the chart's probes): kopf's /healthz on --liveness-port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=4)"]
ENTRYPOINT ["pagoda"]
CMD ["operator", "--all-namespaces"]
