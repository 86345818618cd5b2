# CPU image:   docker build -t dltemplate .
# CUDA image:  docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t dltemplate:cuda .
#              (PyPI's Linux wheels of PyTorch are its CUDA build and bring their CUDA libraries; the host needs the NVIDIA driver and
#              container toolkit: docker run --gpus all dltemplate:cuda python train.py trainer=gpu)
# Train:       docker run --rm -v "$PWD/logs:/app/logs" -v "$PWD/data:/app/data" dltemplate python train.py task=rings
# Serve:       docker run --rm -p 8000:8000 -v "$PWD/logs:/app/logs" dltemplate \
#                  python serve.py ckpt_path=logs/<task>/runs/<run> host=0.0.0.0
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# dependencies first (a layer that code changes do not rebuild), at the versions in constraints.txt
COPY constraints.txt ./
RUN pip install -c constraints.txt torch torchvision --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install -c constraints.txt ".[export,serve]"

COPY conf ./conf
COPY *.py ./
EXPOSE 8000
CMD ["python", "train.py"]
