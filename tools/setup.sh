#!/usr/bin/env bash
# Prepares this machine for building, testing and running the orchestrator:
# installs what is missing, starts the Docker engine when it does not answer,
# and builds the local image (there is no registry to pull from).
# Running it twice is harmless.
set -euo pipefail

IMAGE="${ORCH_IMAGE:-orch-busybox:latest}"
SOCK="/var/run/docker.sock"

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages ---------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The fault tests: CPU load (stress-ng), network namespaces and veth links (iproute2).
command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The DNS tests query the manager with dig.
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
# HAProxy: each worker runs one as its load balancer (the routing mesh). The package's own
# service is never used: workers start theirs.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# wrk: the load of the mesh benchmark (tools/bench/run.sh mesh; its smoke run in CI).
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# PostgreSQL's server programs, for the store's tests: each test starts its own server with
# initdb in a temporary directory; the package is told to make no cluster of its own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
  as_root mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
# busybox-static replaces /bin/busybox; be sure it is the static one the image needs.
if ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' && ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; then
  say "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq busybox-static >/dev/null
fi

# --- The Docker engine --------------------------------------------------------
ping_docker() { curl -fsS --max-time 2 --unix-socket "$SOCK" http://docker/_ping 2>/dev/null | grep -q OK; }

if ! ping_docker; then
  # A killed engine leaves its pid file behind and the next dockerd refuses to
  # start; nothing may reap zombies here, so only a live dockerd counts (not a
  # zombie's name in the process table).
  if pgrep -r R,S,D -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but does not answer; waiting for it"
  else
    as_root rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
    say "starting dockerd (log: /var/log/dockerd.log)"
    # The daemon outlives this script: it keeps none of its caller's descriptors
    # beyond the three it gets here (a pipe or socket it held would keep whoever
    # waits on this script's output, or on its end, waiting for good).
    (
      for fd in /proc/self/fd/*; do
        n=${fd##*/}
        if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null || true; fi
      done
      if [ "$(id -u)" = 0 ]; then set -- setsid dockerd; else set -- sudo setsid dockerd; fi
      exec "$@" >/var/log/dockerd.log 2>&1 < /dev/null
    ) &
  fi
  for _ in $(seq 1 120); do
    ping_docker && break
    sleep 0.5
  done
  if ! ping_docker; then
    say "Docker did not answer at $SOCK within 60 s; last lines of /var/log/dockerd.log:"
    tail -n 20 /var/log/dockerd.log >&2 || true
    exit 1
  fi
fi
say "Docker answers at $SOCK"

# --- The local image ----------------------------------------------------------
# Its default command is an HTTP server on 8080 answering / and /health, so a task
# that names only the image (as Cube's files do) runs.
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,www,tmp,etc}
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh sleep httpd echo cat ls env wget nc true false printf date; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'hello from orch-busybox\n' > "$root/www/index.html"
  printf 'ok\n' > "$root/www/health"
  printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
  tar -C "$root" -c . | docker import \
    -c 'CMD ["/bin/httpd","-f","-p","8080","-h","/www"]' \
    -c 'EXPOSE 8080/tcp' \
    -c 'ENV PATH=/bin' \
    - "$IMAGE" >/dev/null
  say "built $IMAGE"
fi
