# Worker image for Dataflow (sdk_container_image) and Flink (environment_type DOCKER).
# The Beam SDK base image provides the boot entrypoint the runners start.
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/laion-audit
COPY pyproject.toml README.md ./
COPY pipelines/ pipelines/
COPY transforms/ transforms/
COPY configs/ configs/

# The CPU wheels of torch keep the image small; a GPU pool for the embedding step uses
# an image built with the CUDA wheels instead (--build-arg TORCH_INDEX=...cu124).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --extra-index-url ${TORCH_INDEX} \
        torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir . \
    && python -c "import pipelines.audit, transforms.fetch, transforms.hashing, open_clip"

ENTRYPOINT ["/opt/apache/beam/boot"]
