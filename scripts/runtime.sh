# shellcheck shell=bash
# Shared by train.sh, guess.sh, guessDir.sh and test.sh: choose where tensorguess runs.
#
# TENSORGUESS_RUNTIME=auto|docker|native (default auto). Natively it runs from a
# project-managed virtual environment (TENSORGUESS_VENV, default .venv beside this
# project) created on first use with the pinned dependencies in constraints.txt;
# later runs reuse it and reinstall only when pyproject.toml, constraints.txt or the
# version change.
#
# In Docker it runs in the image tensorguess:<version> (TENSORGUESS_IMAGE overrides the
# tag) as the calling user, with the folders named on the command line mounted at their
# own absolute paths. `auto` picks Docker only when an engine answers `docker info`
# within TENSORGUESS_DOCKER_TIMEOUT seconds (default 5) and the image is already built:
# it never starts a multi-gigabyte build by surprise. `docker` builds a missing image.
# TENSORGUESS_GPUS=auto|none|<docker --gpus value> (default auto: `all` when the engine
# has the nvidia runtime). TENSORGUESS_DOCKER_CACHE=<folder>|none (default
# ${XDG_CACHE_HOME:-~/.cache}/tensorguess/docker): the host folder mounted as the
# container's writable cache, so what it converts outlives `docker run --rm`.
#
# --ray (train, sort) installs the `ray` extra on first use; in Docker (whose image has it)
# the container then joins the host's network and gets TENSORGUESS_SHM_SIZE (default 2g)
# of /dev/shm, and TENSORGUESS_RAY_ADDRESS is passed in.

TENSORGUESS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TENSORGUESS_VENV=${TENSORGUESS_VENV:-$TENSORGUESS_ROOT/.venv}

tensorguess_fail() {
  echo "tensorguess: error: $*" >&2
  exit 1
}

tensorguess_python() {
  # The interpreter that creates the virtual environment: 3.10 to 3.13 (TensorFlow 2.21's range).
  local candidate
  for candidate in "${TENSORGUESS_PYTHON:-}" python3.11 python3.12 python3.10 python3.13 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  tensorguess_fail "no Python 3.10-3.13 found; install one, or set TENSORGUESS_PYTHON to its path"
}

# The version is part of the key: an editable install records it in its metadata
# (importlib.metadata), which only a reinstall updates.
tensorguess_install_key() {
  { cat "$TENSORGUESS_ROOT/pyproject.toml" "$TENSORGUESS_ROOT/constraints.txt"; tensorguess_version; } |
    cksum | cut -d' ' -f1
}

# tensorguess_ensure_venv [EXTRAS]: create or update the virtual environment.
# shellcheck disable=SC2120  # test.sh passes the extras; the wrappers pass ray for --ray, else none
tensorguess_ensure_venv() {
  local extras=${1:-} stamp="$TENSORGUESS_VENV/.tensorguess-installed" key wanted log
  key=$(tensorguess_install_key)
  wanted="$key ${extras:-core}"
  if [ -x "$TENSORGUESS_VENV/bin/python" ] && [ -f "$stamp" ]; then
    # An environment installed with the test extras also serves the plain commands.
    if grep -qxF "$wanted" "$stamp" || { [ -z "$extras" ] && grep -q "^$key " "$stamp"; }; then
      return 0
    fi
  fi
  # Say what really happens: test.sh after the wrappers only adds its extras, and a change of
  # the pins updates an environment that exists.
  if [ ! -x "$TENSORGUESS_VENV/bin/python" ] || [ ! -f "$stamp" ]; then
    echo "tensorguess: setting up $TENSORGUESS_VENV (first run only; this takes a few minutes)..." >&2
  elif grep -q "^$key " "$stamp"; then
    echo "tensorguess: adding the ${extras:-core} extras to $TENSORGUESS_VENV (once)..." >&2
  else
    echo "tensorguess: updating $TENSORGUESS_VENV to the changed pyproject.toml, constraints.txt or version..." >&2
  fi
  if [ ! -x "$TENSORGUESS_VENV/bin/python" ]; then
    "$(tensorguess_python)" -m venv "$TENSORGUESS_VENV" || tensorguess_fail "could not create $TENSORGUESS_VENV"
  fi
  log="$TENSORGUESS_VENV/install.log"
  local target="$TENSORGUESS_ROOT"
  [ -n "$extras" ] && target="${TENSORGUESS_ROOT}[$extras]"
  if ! "$TENSORGUESS_VENV/bin/python" -m pip install --disable-pip-version-check \
      -c "$TENSORGUESS_ROOT/constraints.txt" -e "$target" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    tensorguess_fail "installing the dependencies failed (full log: $log)"
  fi
  # Keep what other extras installed with these pins (test.sh's, --ray's); forget older pins.
  { echo "$wanted"; grep "^$key " "$stamp" 2>/dev/null | grep -vxF "$wanted" || true; } >"$stamp.new" && mv "$stamp.new" "$stamp"
}


# The Docker image -------------------------------------------------------------------------

# The package version: __version__ in src/tensorguess/__init__.py, its one source.
tensorguess_version() {
  awk -F "[\"']" '/^__version__ *=/ { print $2; exit }' "$TENSORGUESS_ROOT/src/tensorguess/__init__.py"
}

tensorguess_image() {
  echo "${TENSORGUESS_IMAGE:-tensorguess:$(tensorguess_version)}"
}

# tensorguess_build_image [DOCKER_BUILD_FLAGS...]: build the image from this project and tag it.
# shellcheck disable=SC2120  # build.sh passes the flags; the docker runtime passes none
tensorguess_build_image() {
  docker build --tag "$(tensorguess_image)" "$@" "$TENSORGUESS_ROOT"
}

# tensorguess_within_timeout COMMAND...: end COMMAND after TENSORGUESS_DOCKER_TIMEOUT seconds
# (default 5), so that an engine that never answers cannot hang the wrappers.
tensorguess_within_timeout() {
  local timer
  for timer in timeout gtimeout; do
    if command -v "$timer" >/dev/null 2>&1; then
      "$timer" -k 2 "${TENSORGUESS_DOCKER_TIMEOUT:-5}" "$@"
      return
    fi
  done
  "$@"
}

# tensorguess_docker_answers: succeed when a Docker engine answers, keeping the engine's
# runtimes (JSON) in TENSORGUESS_DOCKER_RUNTIMES for the GPU choice.
tensorguess_docker_answers() {
  command -v docker >/dev/null 2>&1 || return 1
  TENSORGUESS_DOCKER_RUNTIMES=$(tensorguess_within_timeout docker info --format '{{json .Runtimes}}' </dev/null 2>/dev/null)
}

tensorguess_docker_has_nvidia() {
  [[ ${TENSORGUESS_DOCKER_RUNTIMES:-} == *'"nvidia"'* ]]
}

tensorguess_image_present() {
  tensorguess_within_timeout docker image inspect "$(tensorguess_image)" </dev/null >/dev/null 2>&1
}

# tensorguess_choose_runtime: set TENSORGUESS_CHOSEN_RUNTIME to docker or native.
tensorguess_choose_runtime() {
  TENSORGUESS_CHOSEN_RUNTIME=native
  case "${TENSORGUESS_RUNTIME:-auto}" in
    native) ;;
    auto)
      if tensorguess_docker_answers; then
        if tensorguess_image_present; then
          TENSORGUESS_CHOSEN_RUNTIME=docker
        elif tensorguess_docker_has_nvidia; then
          echo "tensorguess: running natively; for the GPU through Docker, build the image once: bash build.sh" >&2
        fi
      fi
      ;;
    docker)
      tensorguess_docker_answers ||
        tensorguess_fail "TENSORGUESS_RUNTIME=docker, but no Docker engine answers 'docker info': start Docker, or set TENSORGUESS_RUNTIME=native"
      if ! tensorguess_image_present; then
        echo "tensorguess: building the Docker image $(tensorguess_image) (first run only; this takes a while)..." >&2
        tensorguess_build_image >&2 || tensorguess_fail "building the Docker image failed (see above); retry with: bash build.sh"
      fi
      TENSORGUESS_CHOSEN_RUNTIME=docker
      ;;
    *) tensorguess_fail "TENSORGUESS_RUNTIME must be auto, docker or native, not '$TENSORGUESS_RUNTIME'" ;;
  esac
}

# tensorguess_runtime: print the runtime the wrappers would use (docker or native).
tensorguess_runtime() {
  tensorguess_choose_runtime
  echo "$TENSORGUESS_CHOSEN_RUNTIME"
}

# Running in Docker ------------------------------------------------------------------------
# A path on the command line is one of these kinds:
#   folder  read and written (TF_FILES)                 mounted read-write
#   input   only read (SRC, a hub:<folder> backbone)    mounted read-only
#   file    only read (IMAGE, --graph, --labels, --model) its folder mounted read-only
#   output  written (DEST, --bottleneck_dir, --explain) created first, as the user; read-write
# Every path is passed on absolute and mounted at that same path, so messages and the
# manifest name the user's own paths. A path that does not exist is not created (except an
# output): its nearest existing folder is mounted read-only, and tensorguess says what is
# missing just as it does natively. tests/test_docker_wrappers.py checks the tables below
# against the command line's parser.

# tensorguess_positional_kind COMMAND INDEX: set REPLY to the kind of that positional argument.
tensorguess_positional_kind() {
  case "$1:$2" in
    train:0 | guess:0 | sort:0) REPLY=folder ;;
    guess:*) REPLY='file' ;;
    sort:1) REPLY=input ;;
    sort:2) REPLY=output ;;
    *) REPLY=none ;;
  esac
}

# tensorguess_option_kind OPTION: set REPLY to the kind of the option's value.
tensorguess_option_kind() {
  case "$1" in
    --bottleneck_dir | --summaries_dir | --explain) REPLY=output ;;
    --graph | --labels | --model) REPLY='file' ;;
    --backbone) REPLY=backbone ;;
    --ray | --ray_workers) REPLY=none ;; # a Ray address, a number: nothing to mount
    *) REPLY=none ;;
  esac
}

# tensorguess_value_is_optional OPTION: succeed for the options whose value may be left out
# (--ray [ADDRESS]): as argparse does, the next word is their value unless it is an option.
tensorguess_value_is_optional() {
  [ "$1" = --ray ]
}

# tensorguess_uses_ray ARGS...: succeed when the command line asks for Ray (--ray).
tensorguess_uses_ray() {
  local word
  for word in "$@"; do
    case "$word" in
      --) return 1 ;;
      --ray | --ray=*) return 0 ;;
    esac
  done
  return 1
}

# tensorguess_is_switch OPTION: succeed for the options that take no value.
tensorguess_is_switch() {
  case "$1" in
    --json | --debug | --help | -h | --move | --no_report | --unknown) return 0 ;;
    --fine_tune | --no-fine_tune | --flip_left_right | --no-flip_left_right) return 0 ;;
    --flip_average | --no-flip_average | --multi_label | --no-multi_label) return 0 ;;
    --fine_tune_on_validation | --no-fine_tune_on_validation) return 0 ;;
    *) return 1 ;;
  esac
}

# tensorguess_absolute PATH: set REPLY to PATH made absolute, `.` and `..` resolved.
tensorguess_absolute() {
  local path=$1 parent
  case "$path" in
    /*) ;;
    *) path=$PWD/$path ;;
  esac
  REPLY=$path
  if [ -d "$path" ]; then
    REPLY=$(CDPATH='' cd -- "$path" && pwd) || REPLY=$path
  elif parent=$(CDPATH='' cd -- "$(dirname -- "$path")" 2>/dev/null && pwd); then
    REPLY=${parent%/}/$(basename -- "$path")
  fi
}

# tensorguess_add_mount FOLDER ro|rw: mount FOLDER at its own path (once; read-write wins).
tensorguess_add_mount() {
  local folder=$1 mode=$2 index=0
  if [ "$folder" = / ]; then
    return 0
  fi
  case "$folder" in
    *:*) tensorguess_fail "Docker cannot mount '$folder' (a ':' in a path splits docker -v); rename it, or set TENSORGUESS_RUNTIME=native" ;;
  esac
  while [ "$index" -lt "${#TENSORGUESS_MOUNT_FOLDERS[@]}" ]; do
    if [ "${TENSORGUESS_MOUNT_FOLDERS[index]}" = "$folder" ]; then
      if [ "$mode" = rw ]; then
        TENSORGUESS_MOUNT_MODES[index]=rw
      fi
      return 0
    fi
    index=$((index + 1))
  done
  TENSORGUESS_MOUNT_FOLDERS+=("$folder")
  TENSORGUESS_MOUNT_MODES+=("$mode")
}

# tensorguess_docker_path KIND PATH: set REPLY to PATH made absolute, and mount what it needs.
tensorguess_docker_path() {
  local kind=$1 path=$2 absolute folder mode=ro
  if [ "$kind" = output ]; then
    mkdir -p -- "$path" || tensorguess_fail "could not create the folder $path"
  fi
  tensorguess_absolute "$path"
  absolute=$REPLY
  folder=$absolute
  case "$kind" in
    folder | output) mode=rw ;;
    file) folder=$(dirname -- "$absolute") ;;
  esac
  if [ ! -e "$folder" ]; then
    mode=ro
    while [ ! -e "$folder" ] && [ "$folder" != / ]; do
      folder=$(dirname -- "$folder")
    done
  fi
  tensorguess_add_mount "$folder" "$mode"
  REPLY=$absolute
}

# tensorguess_docker_value KIND VALUE: set REPLY to VALUE as the container must see it.
tensorguess_docker_value() {
  local kind=$1 value=$2
  REPLY=$value
  case "$kind" in
    none) ;;
    backbone)
      # A local SavedModel folder (hub:<path>) is mounted; a remote handle is left as it is.
      if [[ $value == hub:?* ]] && [ -e "${value#hub:}" ]; then
        tensorguess_docker_path input "${value#hub:}"
        REPLY=hub:$REPLY
      fi
      ;;
    *) tensorguess_docker_path "$kind" "$value" ;;
  esac
}

tensorguess_asks_help() {
  local word
  for word in "$@"; do
    case "$word" in
      --) return 1 ;;
      --help | -h) return 0 ;;
    esac
  done
  return 1
}

# tensorguess_docker_arguments COMMAND ARGS...: set TENSORGUESS_DOCKER_ARGUMENTS to ARGS with
# every path made absolute, and TENSORGUESS_MOUNT_FOLDERS/_MODES to what must be mounted.
tensorguess_docker_arguments() {
  local command=$1 word name position=0 options_done=0 moving=0
  shift
  # sort --move deletes sources once copied: SRC is then mounted read-write.
  for word in "$@"; do
    if [ "$word" = --move ]; then moving=1; fi
  done
  TENSORGUESS_DOCKER_ARGUMENTS=()
  TENSORGUESS_MOUNT_FOLDERS=()
  TENSORGUESS_MOUNT_MODES=()
  if tensorguess_asks_help "$@"; then
    TENSORGUESS_DOCKER_ARGUMENTS=("$@")
    return 0
  fi
  while [ $# -gt 0 ]; do
    word=$1
    shift
    if [ "$options_done" = 0 ] && [ "$word" = -- ]; then
      options_done=1
    elif [ "$options_done" = 0 ] && [[ $word == -?* ]]; then
      name=${word%%=*}
      if ! tensorguess_is_switch "$name"; then
        tensorguess_option_kind "$name"
        if [[ $word == *=* ]]; then
          tensorguess_docker_value "$REPLY" "${word#*=}"
          word=$name=$REPLY
        elif tensorguess_value_is_optional "$name" && { [ $# -eq 0 ] || [[ $1 == -* ]]; }; then
          : # given without its value
        elif [ $# -gt 0 ]; then
          tensorguess_docker_value "$REPLY" "$1"
          shift
          TENSORGUESS_DOCKER_ARGUMENTS+=("$word")
          word=$REPLY
        fi
      fi
    else
      tensorguess_positional_kind "$command" "$position"
      if [ "$moving" = 1 ] && [ "$command:$REPLY" = sort:input ]; then
        REPLY=folder
      fi
      position=$((position + 1))
      tensorguess_docker_value "$REPLY" "$word"
      word=$REPLY
    fi
    TENSORGUESS_DOCKER_ARGUMENTS+=("$word")
  done
}

# tensorguess_docker_cache: set REPLY to the host folder that becomes the container's
# writable cache (TENSORGUESS_CACHE_DIR there), created first as the user; empty for none.
# It is apart from the native cache: the image's TensorFlow and OpenVINO may be other builds
# than the virtual environment's. The image's own read-only cache (the converted backbones)
# stays underneath. A folder that cannot be used costs a warning, never the run.
tensorguess_docker_cache() {
  local base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  local folder=${TENSORGUESS_DOCKER_CACHE:-${base:+$base/tensorguess/docker}}
  REPLY=
  if [ -z "$folder" ] || [ "$folder" = none ]; then
    return 0
  fi
  if ! mkdir -p -- "$folder" 2>/dev/null; then
    echo "tensorguess: could not create the cache folder $folder, so converted models will not be kept (set TENSORGUESS_DOCKER_CACHE to another folder, or to none)" >&2
    return 0
  fi
  tensorguess_absolute "$folder"
  case "$REPLY" in
    *:*)
      echo "tensorguess: Docker cannot mount the cache folder $REPLY (a ':' splits docker -v), so converted models will not be kept (set TENSORGUESS_DOCKER_CACHE to another folder, or to none)" >&2
      REPLY=
      ;;
  esac
}

# tensorguess_docker_run COMMAND ARGS...: run `tensorguess COMMAND ARGS...` in the image, as
# the calling user (so what it writes belongs to the user), and exit with its exit code.
tensorguess_docker_run() {
  local command=$1 index=0 folder mode cache=
  shift
  local options=(run --rm -i)
  tensorguess_docker_arguments "$command" "$@"
  # With --help nothing is created or mounted, the cache included.
  if ! tensorguess_asks_help "$@"; then
    tensorguess_docker_cache
    cache=$REPLY
  fi
  if [ -t 0 ] && [ -t 1 ]; then
    options+=(-t)
  fi
  # --init: a small init as PID 1 passes signals (Ctrl-C, docker stop) on to tensorguess.
  options+=(--init --user "$(id -u):$(id -g)")
  # --help and usage lines name the script the user typed.
  if [ -n "${TENSORGUESS_WRAPPER:-}" ]; then
    options+=(-e "TENSORGUESS_WRAPPER=$TENSORGUESS_WRAPPER")
  fi
  if [ -n "$cache" ]; then
    options+=(-e "TENSORGUESS_CACHE_DIR=$cache" -v "$cache:$cache")
  fi
  case "${TENSORGUESS_GPUS:-auto}" in
    auto)
      if tensorguess_docker_has_nvidia; then
        options+=(--gpus all)
      fi
      ;;
    none) ;;
    *) options+=(--gpus "$TENSORGUESS_GPUS") ;;
  esac
  # An engine chosen on the host (engines/) holds in the container too.
  if [ -n "${TENSORGUESS_ENGINE:-}" ]; then
    options+=(-e "TENSORGUESS_ENGINE=$TENSORGUESS_ENGINE")
  fi
  # With --ray the container is a Ray driver: it reaches the cluster and the cluster's
  # workers connect back to it (the host's network), and a local Ray runtime keeps its
  # object store in /dev/shm (Docker gives 64 MB by default). docs/cluster.md.
  if tensorguess_uses_ray "$@"; then
    options+=(--network host --shm-size "${TENSORGUESS_SHM_SIZE:-2g}")
    if [ -n "${TENSORGUESS_RAY_ADDRESS:-}" ]; then
      options+=(-e "TENSORGUESS_RAY_ADDRESS=$TENSORGUESS_RAY_ADDRESS")
    fi
  fi

  while [ "$index" -lt "${#TENSORGUESS_MOUNT_FOLDERS[@]}" ]; do
    folder=${TENSORGUESS_MOUNT_FOLDERS[index]}
    mode=${TENSORGUESS_MOUNT_MODES[index]}
    index=$((index + 1))
    # The cache is mounted read-write already, and Docker refuses two mounts at one path.
    if [ "$folder" = "$cache" ]; then
      continue
    fi
    if [ "$mode" = ro ]; then
      options+=(-v "$folder:$folder:ro")
    else
      options+=(-v "$folder:$folder")
    fi
  done
  exec docker "${options[@]}" "$(tensorguess_image)" "$command" \
    ${TENSORGUESS_DOCKER_ARGUMENTS[@]+"${TENSORGUESS_DOCKER_ARGUMENTS[@]}"}
}

# tensorguess_main COMMAND ARGS...: run `tensorguess COMMAND ARGS...` in the chosen runtime.
tensorguess_main() {
  local command=$1
  shift
  # --help and usage lines say `bash guessDir.sh`, not `tensorguess sort`.
  case "$command" in
    train) export TENSORGUESS_WRAPPER="bash train.sh" ;;
    guess) export TENSORGUESS_WRAPPER="bash guess.sh" ;;
    sort) export TENSORGUESS_WRAPPER="bash guessDir.sh" ;;
  esac
  tensorguess_choose_runtime
  if [ "$TENSORGUESS_CHOSEN_RUNTIME" = docker ]; then
    tensorguess_docker_run "$command" "$@"
  fi
  if tensorguess_uses_ray "$@"; then
    tensorguess_ensure_venv ray # Ray, an optional extra, on first use of --ray
  else
    tensorguess_ensure_venv
  fi
  exec "$TENSORGUESS_VENV/bin/python" -m tensorguess "$command" "$@"
}
