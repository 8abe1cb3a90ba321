# The service image: the API (gunicorn), the Celery workers, Flower and the migration
# all run from it; docker-compose.yml picks the command.
#   docker build -t rideshare-jobs .
#   docker build --build-arg EXTRAS=dev -t rideshare-jobs:dev .   (adds the SMTP sink and localstripe)
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a throwaway copy of the source, so the code that runs is the installed
# package and nothing in the working directory can shadow it.
WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py ./
COPY rideshare ./rideshare
COPY tasks ./tasks
COPY devstack ./devstack
RUN pip install ".${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /src

# Everything runs as an unprivileged user (Celery warns when run as root).
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /app/var/mail \
    && chown -R app:app /app
WORKDIR /app
USER app
ENV RIDESHARE_VAR_DIR=/app/var

EXPOSE 8000 5555
CMD ["gunicorn", "-c", "python:rideshare.gunicorn_conf", "rideshare:create_app()", \
     "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "8", \
     "--access-logfile", "-", "--no-control-socket"]
