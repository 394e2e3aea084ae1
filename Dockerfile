# tensorguess on TensorFlow's GPU image: the host needs only the NVIDIA driver and the
# NVIDIA container toolkit, not CUDA. Build it with `bash build.sh`.
# The tag is the TensorFlow release that pyproject.toml and constraints.txt pin
# (tests/test_docker_wrappers.py checks that they agree).
FROM tensorflow/tensorflow:2.21.0-gpu

# The container runs as the calling user (docker run --user), who has no home in the image.
ENV HOME=/tmp \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/tensorguess/src

# The dependencies first, from pyproject.toml and the pins alone, so that editing the source
# does not reinstall them.
# Keep the base image's TensorFlow (built for its CUDA): refuse a base image whose
# TensorFlow is not the pinned one, since pip would then replace it with another build.
# PIP_BREAK_SYSTEM_PACKAGES: the image's TensorFlow lives in the system Python too.
# tomllib is Python 3.11's; on 3.10, pip's own copy of the same parser (tomli) reads it.
# The serve extra comes too, so that the image can run `serve` (docs/serve.md), and the
# export extra (tensorguess export, train.sh --export, --model FILE): a container runs as
# the calling user, who could not install it on first use as a native run does.
# The `ray` extra comes too, so that --ray works in the container (docs/cluster.md), and
# the int8 extra (NNCF) for train --engine openvino-int8, for the same reason as export's.
COPY pyproject.toml constraints.txt ./
RUN pinned="$(sed -n 's/^tensorflow==//p' constraints.txt)" \
 && installed="$(python3 -c 'import importlib.metadata as m; print(m.version("tensorflow"))')" \
 && if [ "$installed" != "$pinned" ]; then \
      echo "The base image has TensorFlow $installed but constraints.txt pins $pinned: change FROM." >&2; \
      exit 1; \
    fi \
 && python3 -c 'import importlib, sys; toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "pip._vendor.tomli"); project = toml.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(project["dependencies"] + project["optional-dependencies"]["serve"] + project["optional-dependencies"]["export"] + project["optional-dependencies"]["ray"] + project["optional-dependencies"]["int8"]))' > /tmp/requirements.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("tensorflow") != sys.argv[1])' "$pinned"

# Then the package itself, without touching its dependencies.
COPY README.md ./
COPY src ./src
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps .

# Convert the embedded backbones now (and for OpenVINO, the engine of containers without a
# GPU), into a cache every user can read: a container works offline and starts without
# converting. Only this step writes there.
# OpenVINO's converter sends usage telemetry unless $HOME/intel/openvino_telemetry says 0,
# and otherwise writes a client id there: it says 0, for every user (HOME is /tmp, above),
# before anything converts. So nothing is sent, from this build or from a container, and
# nothing tries to write there (a /tmp/intel that the conversion left to root made every
# container print "Failed to create openvino_telemetry file"); the last line checks it.
RUN mkdir -p "$HOME/intel" \
 && printf 0 > "$HOME/intel/openvino_telemetry" \
 && chmod -R a+rX "$HOME/intel" \
 && export TENSORGUESS_CACHE_DIR=/opt/tensorguess/cache \
 && python3 -c "from tensorguess.features.backbones import backbone_names, get_backbone; from tensorguess.features.bottlenecks import features_runner; [features_runner(get_backbone(name), 'openvino') for name in backbone_names()]" \
 && test -n "$(find "$TENSORGUESS_CACHE_DIR" -name '*.npz')" \
 && test -n "$(find "$TENSORGUESS_CACHE_DIR" -name 'model.xml')" \
 && chmod -R a+rX "$TENSORGUESS_CACHE_DIR" \
 && test "$(find "$HOME/intel" -mindepth 1)" = "$HOME/intel/openvino_telemetry"

# At run time that cache is read-only, consulted when the writable one lacks an entry. The
# writable one defaults to /tmp, which `docker run --rm` loses: the wrappers point it at a
# folder of the host's cache, mounted read-write (docs/docker.md).
ENV TENSORGUESS_BUILTIN_CACHE_DIR=/opt/tensorguess/cache \
    TENSORGUESS_CACHE_DIR=/tmp/tensorguess-cache

WORKDIR /tmp
# tensorguess serve's default port (TF Serving's): docker run -p 8501:8501 ... serve /models --host 0.0.0.0
EXPOSE 8501
ENTRYPOINT ["python3", "-m", "tensorguess"]
CMD ["--help"]
