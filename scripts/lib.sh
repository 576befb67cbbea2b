# shellcheck shell=bash
# Helpers sourced by the scripts in this directory; not executable on its own.
#
# Everything the dev scripts create lives under $LANECTL_STATE (override it to
# keep several setups apart): a containers.conf, Podman's storage (root/,
# runroot/), the REST API socket podman.sock, and the service's log and pid.
# No file under /etc is touched.

# The repository this script belongs to, whatever the caller's cwd.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export REPO_ROOT

: "${LANECTL_STATE:=${XDG_STATE_HOME:-$HOME/.local/state}/lanectl-dev}"
export LANECTL_STATE
LANECTL_CONF="$LANECTL_STATE/containers.conf"
LANECTL_SOCK="$LANECTL_STATE/podman.sock"

# Podman's tmp_dir decides whether the host rebooted (a missing tmp_dir means
# "rebooted": the containers it believed running are reset) and must not be
# shared with other Podman setups on the host. /run is not a tmpfs on every
# host, so the kernel's boot id is part of the name: a reboot always yields a
# new, empty tmp_dir.
lanectl_tmp_dir() {
    local key base boot
    boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id 2>/dev/null || echo 0)
    key=$(printf '%s' "$LANECTL_STATE" | sha256sum | cut -c1-12)-$boot
    if [ "$(id -u)" = 0 ]; then
        base=/run
    elif [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -d "${XDG_RUNTIME_DIR}" ]; then
        base=$XDG_RUNTIME_DIR
    else
        base=$LANECTL_STATE
    fi
    printf '%s/lanectl-dev-%s/libpod' "$base" "$key"
}

die() {
    printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

# The podman CLI on this setup's storage and config. CONTAINER_HOST is dropped
# because Podman 4 switches to remote mode when it is set, where --root is refused.
pod() {
    env -u CONTAINER_HOST -u CONTAINER_CONNECTION CONTAINERS_CONF="$LANECTL_CONF" \
        podman --root "$LANECTL_STATE/root" --runroot "$LANECTL_STATE/runroot" "$@"
}

# True when the REST API answers on the socket.
podman_answers() {
    [ -S "$LANECTL_SOCK" ] &&
        [ "$(curl -s --max-time 2 --unix-socket "$LANECTL_SOCK" http://d/v4.0.0/libpod/_ping 2>/dev/null)" = OK ]
}

# Runs "$@" with its output captured; on failure shows that output and dies.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        die "failed: $*"
    fi
}

# Loads the environment that scripts/podman-env prints (starting the service if needed).
use_podman_env() {
    local lines
    lines=$("$REPO_ROOT/scripts/podman-env") || die "scripts/podman-env failed"
    eval "$lines"
}
