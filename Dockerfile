# syntax=docker/dockerfile:1
# tradeengine: build the wheels (Rust core by maturin) in one stage, run them on a slim Python
# 3.11 image as a non-root user. Works with the runbook's
#   docker build -t trading-platform .
#   docker run -d --name trading-platform --env-file .env -p 8002:8002 trading-platform

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir 'maturin>=1.7,<2'
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY core-rs ./core-rs
COPY python ./python
COPY plugins ./plugins
COPY deploy/build-wheels.sh ./deploy/build-wheels.sh
RUN PYTHON=/opt/build/bin/python deploy/build-wheels.sh /wheels

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRADING_MODE=paper \
    EXECUTION_MODE=backtest
RUN useradd --create-home --uid 10001 trader
COPY --from=build /wheels /wheels
COPY deploy/install-wheels.sh /usr/local/bin/install-wheels
RUN install-wheels /wheels && rm -rf /wheels
USER 10001:10001
WORKDIR /home/trader
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8002/api/health', timeout=2).status == 200 else 1)"]
CMD ["tradeengine", "serve", "--host", "0.0.0.0", "--port", "8002"]
