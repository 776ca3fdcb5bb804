# kudos worker image: `docker build -t kudos .`, then `docker run kudos worker|migrate|produce ...`.
# The project is installed (not editable) into a venv in a build stage; the runtime stage
# carries only that venv and runs as an unprivileged user.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kudos
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/kudos/bin/pip install -r requirements.txt

COPY streams/ streams/
COPY schemas/ schemas/
COPY sinks/ sinks/
RUN /opt/kudos/bin/pip install --no-deps . \
 && /opt/kudos/bin/kudos --help >/dev/null


FROM python:3.11-slim

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 kudos \
 && useradd --system --uid 10001 --gid kudos --home-dir /var/lib/kudos --create-home \
            --shell /usr/sbin/nologin kudos

COPY --from=build /opt/kudos /opt/kudos

ENV PATH=/opt/kudos/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KUDOS_DATA_DIR=/var/lib/kudos \
    KUDOS_HTTP_HOST=0.0.0.0 \
    KUDOS_HTTP_PORT=6066

# faust writes its data directory into the working directory: keep it writable.
WORKDIR /var/lib/kudos
USER 10001:10001

EXPOSE 6066

# /health answers 503 when ClickHouse is unreachable; urlopen raises on it, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KUDOS_HTTP_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["kudos"]
CMD ["worker"]
