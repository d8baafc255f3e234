# The image every Kubernetes pod runs (deploy/kubernetes): the pinned requirements and the project, installed.
# MLflow's kubernetes backend builds a thin image FROM this one per run (it copies deploy/kubernetes/ in) and
# pushes it to the backend config's repository-uri. Build and push this base first:
#   docker build -t agnews-mlops:latest . && docker tag agnews-mlops:latest <registry>/agnews-mlops:latest
FROM python:3.11.7-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
WORKDIR /app

# torch first from its CPU index (PyPI's Linux wheel bundles CUDA); requirements.txt then finds it satisfied.
# For GPU nodes, use the CUDA index (https://download.pytorch.org/whl/cu128) instead.
COPY requirements.txt ./
RUN TORCH="$(grep -E '^torch==' requirements.txt)" \
    && pip install "$TORCH" --index-url https://download.pytorch.org/whl/cpu \
    && pip install -r requirements.txt

# The project as a package: `python -m steps.<entry point>` works from any folder (MLflow runs in its own).
COPY pyproject.toml MLproject ./
COPY agnews agnews
COPY steps steps
RUN pip install --no-deps .
