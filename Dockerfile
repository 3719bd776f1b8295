# One image for every process of the distributed stack (see docker-compose.yml):
#   dispatcher serve | dispatcher scheduler | dramatiq workers.actors | dispatcher sandbox serve
FROM python:3.11-slim

# dramatiq_worker_timeout: Dramatiq polls for due delayed messages this often (ms, default 1000);
# a booked throttle slot must be picked up well inside its grace (DISPATCHER_THROTTLE_GRACE_S).
ENV dramatiq_worker_timeout=100 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
COPY workers ./workers
RUN pip install . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin dispatcher

# Non-root; the working directory is writable (the embedded mode keeps .dispatcher/ there).
USER dispatcher
WORKDIR /home/dispatcher

# 8000 webhooks + /metrics, 8765 sandbox carrier, 9108 worker / scheduler metrics exporter.
EXPOSE 8000 8765 9108

CMD ["dispatcher", "--help"]
