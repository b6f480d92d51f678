# snndist on a GPU Ray cluster: Ray's own image of the pinned Ray and Python, JAX with CUDA wheels,
# snndist with pyproject.toml's pins. The same image serves head and workers (cluster/README.md).
#
#   docker build -t REGISTRY/snndist:0.1.0 . && docker push REGISTRY/snndist:0.1.0
#
# No secret goes into the image: the Ray token and the W&B key come from Kubernetes Secrets or the
# launcher's file mounts when the containers start.
FROM rayproject/ray:2.60.0-py311-gpu

# Ray's images run as the non-root user "ray" (uid 1000, group users 100); so does snndist.
USER 1000:100
WORKDIR /home/ray/snndist

# What the install needs, then the install: JAX's CUDA 12 wheels (the cuda extra) and the same
# version ranges as pyproject.toml (hadolint cannot see those pins: DL3013 off for this line); Ray
# stays the image's own (ray[default]==2.60.0).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users snndist ./snndist
COPY --chown=ray:users configs ./configs
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "ray[default]==2.60.0" ".[cuda]"

# A GPU shared by a few processes (workers, a test job): JAX allocates as it needs, up to 45% each,
# instead of taking 75% of the GPU at its first array. Every process's malloc asks for transparent huge
# pages (snndist/huge_pages.py): the Ray workers start from the node's environment, so this is where they
# get it.
ENV XLA_PYTHON_CLIENT_PREALLOCATE=false \
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    RAY_USAGE_STATS_ENABLED=0
