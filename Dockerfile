# patterd in a container: `docker compose up` (see docker-compose.yml) or
#   docker build -t patterd . && docker run -p 8000:8000 -e PATTER_BIND_HOST=0.0.0.0 \
#     -e PATTERD_TOKEN=... -v ./config:/etc/patterd:ro -v patterd-records:/var/lib/patterd patterd
# Binding 0.0.0.0 (needed to be reachable through -p) requires server.dashboard_token.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# espeak-ng: the offline text-to-speech voice of the default agent.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY patterd ./patterd
RUN pip install . && cd / && rm -rf /src

# A dedicated unprivileged user owns the records volume; the config is read-only to it.
RUN groupadd --system --gid 10001 patterd \
 && useradd --system --uid 10001 --gid patterd --home-dir /var/lib/patterd --no-create-home \
      --shell /usr/sbin/nologin patterd \
 && install -d -o patterd -g patterd -m 0750 /var/lib/patterd \
 && install -d -m 0755 /etc/patterd
COPY config/patter.yaml /etc/patterd/patter.yaml

ENV PATTER_LOG_DIR=/var/lib/patterd \
    PATTERD_CONFIG=/etc/patterd/patter.yaml
VOLUME ["/var/lib/patterd"]
WORKDIR /var/lib/patterd
USER patterd:patterd
EXPOSE 8000

# No curl in slim images: Python asks /healthz (with the token when one is set).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; r = u.Request(os.environ.get('PATTERD_HEALTHCHECK_URL', 'http://127.0.0.1:8000/healthz')); t = os.environ.get('PATTERD_TOKEN'); t and r.add_header('Authorization', 'Bearer ' + t); u.urlopen(r, timeout=4)"]

# SIGTERM drains live calls (server.drain_timeout_secs, 30 s); give `docker stop -t 45`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["patterd"]
CMD ["run", "--config", "/etc/patterd/patter.yaml"]
