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
    && python -c "import pipelines.audit, transforms.fetch, transforms.hashing, open_clip" \
    # Compile the takedown search kernels into numba's cache next to the installed code
    # (from / so that the installed package is imported, not this folder's copy): no
    # worker then pays the compile, about 9 CPU-seconds, at start-up.
    && cd / && python -c "import numpy as np; from transforms.takedown.hamming import HammingSearch as H; \
c = np.random.default_rng(0).integers(0, 256, (2000, 32), dtype=np.uint8); \
H.build(c, np.full(2000, 31.0), hamming_strategy='mih').query((np.arange(4), c[:4]))"

ENTRYPOINT ["/opt/apache/beam/boot"]
