#!/usr/bin/env bash
# Proves the README's set-up on a fresh machine: builds a minimal Debian 12 root
# (mmdebstrap --variant=minbase bookworm, with this machine's apt sources), clones this checkout's
# HEAD into it, bind-mounts this machine's Rust toolchain, and in a chroot runs scripts/deps.sh
# and a locked release build of every binary; `demo` then runs scripts/demo.sh, `test` runs
# scripts/test.sh. Run as root. The root is removed afterwards, also on failure or Ctrl-C.
#
#   scripts/fresh-check.sh [build|demo|test] [--keep] [--no-cargo-cache]
#
# --keep            leave the root in place for inspection (its path is printed; nothing is
#                   mounted on it once the script has exited)
# --no-cargo-cache  start with an empty cargo registry (every crate downloaded, as on a truly
#                   fresh machine); by default the host's registry index and .crate cache are
#                   copied in (read, never written: the host's cache stays as it is)
#
# Everything mounted for the chroot lives in a private mount namespace inside a private PID
# namespace: when the check ends, every process it started is gone and its mounts with them.
set -euo pipefail

usage() {
  sed -n '8,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Inside: runs as PID 1 of a new PID namespace with a private mount namespace (see `main`).
# ---------------------------------------------------------------------------------------------
inside() {
  local work=$1 mode=$2 rustup_home=$3 cargo_home=$4
  local root=$work/root

  # `ip netns exec` remounts /sys on a new mount namespace and needs / to be a mount point.
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
  mkdir -p "$root/run/lock" "$root/root/.rustup" "$root/root/.cargo/bin"
  mount --bind "$rustup_home" "$root/root/.rustup"
  mount -o remount,bind,ro "$root/root/.rustup"
  mount --bind "$cargo_home/bin" "$root/root/.cargo/bin"
  mount -o remount,bind,ro "$root/root/.cargo/bin"

  local phases=(deps build)
  case $mode in
    demo) phases+=(demo) ;;
    test) phases+=(test) ;;
  esac

  local phase cmd t0 rc
  for phase in "${phases[@]}"; do
    case $phase in
      deps) cmd="./scripts/deps.sh" ;;
      build) cmd="cargo build --workspace --bins --locked --release" ;;
      demo) cmd="./scripts/demo.sh" ;;
      test) cmd="./scripts/test.sh" ;;
    esac
    echo
    echo "=== fresh-check: $phase: $cmd"
    t0=$SECONDS
    echo "$phase $t0" >"$work/current"
    rc=0
    env -i HOME=/root USER=root LOGNAME=root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
      PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      chroot "$root" /bin/bash -c "cd /root/linen && $cmd" || rc=$?
    echo "$phase $rc $((SECONDS - t0))" >>"$work/phases"
    if [ "$rc" -ne 0 ]; then
      echo "=== fresh-check: $phase FAILED (exit $rc) after $((SECONDS - t0)) s"
      return "$rc"
    fi
    echo "=== fresh-check: $phase passed in $((SECONDS - t0)) s"
  done
}

# ---------------------------------------------------------------------------------------------
# Outside: the root's life cycle and the summary.
# ---------------------------------------------------------------------------------------------
work=""
keep=0
inner=""

summary() {
  [ -s "$work/phases" ] || return 0
  echo
  echo "=== fresh-check summary: $mode at $head_short (Debian bookworm minbase)"
  local phase rc secs
  while read -r phase rc secs; do
    if [ "$rc" -eq 0 ]; then
      printf '  %-6s passed %6d s\n' "$phase" "$secs"
    else
      printf '  %-6s FAILED %6d s   (exit %s)\n' "$phase" "$secs" "$rc"
    fi
  done <"$work/phases"
  # A phase cut short by Ctrl-C or TERM wrote no result.
  if [ -s "$work/current" ] && read -r phase _ <"$work/current" &&
    ! grep -q "^$phase " "$work/phases"; then
    printf '  %-6s INTERRUPTED\n' "$phase"
  fi
  printf '  %-6s        %6d s\n' total "$SECONDS"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Keep going whatever fails here (a full disk makes even the messages fail): the root must go.
  set +e
  [ -n "$work" ] || exit "$rc"
  if [ -n "$inner" ] && kill -0 "$inner" 2>/dev/null; then
    echo "fresh-check: interrupted; stopping the check (PID $inner and its namespace)" >&2
    kill -KILL "$inner" 2>/dev/null || true
    wait "$inner" 2>/dev/null || true
    # The namespace's processes die with its init; wait until none is left in the root.
    local i p left
    for i in $(seq 50); do
      left=""
      for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$work/root" ] && left="$left ${p#/proc/}"
      done
      [ -z "$left" ] && break
      sleep 0.2
    done
  fi
  # The unshare child (and with it every process of the check) has exited by now: the PID
  # namespace's init took the rest with it, and its mount namespace went with them. Nothing
  # must be mounted under the root in this namespace; if something is, do not delete through it.
  if findmnt -rn -o TARGET | grep -q "^$work/"; then
    echo "fresh-check: mounts left under $work; not removing it:" >&2
    findmnt -rn -o TARGET | grep "^$work/" >&2
    exit 1
  fi
  summary
  if [ "$keep" -eq 1 ]; then
    rm -f "$work/phases" "$work/current"
    echo "fresh-check: root kept at $work/root (remove with: rm -rf $work)"
  else
    if rm -rf --one-file-system "$work"; then
      echo "fresh-check: removed $work"
    else
      echo "fresh-check: could not remove all of $work" >&2
      rc=1
    fi
  fi
  if [ "$rc" -eq 0 ]; then
    echo "fresh-check: PASS ($mode)"
  else
    echo "fresh-check: FAIL ($mode, exit $rc)"
  fi
  exit "$rc"
}

main() {
  mode=build
  local cargo_cache=1 arg
  for arg in "$@"; do
    case $arg in
      build | demo | test) mode=$arg ;;
      --keep) keep=1 ;;
      --no-cargo-cache) cargo_cache=0 ;;
      *) usage ;;
    esac
  done

  if [ "$(id -u)" -ne 0 ]; then
    echo "fresh-check: must run as root (mmdebstrap, chroot, mounts)" >&2
    exit 1
  fi
  local repo rustup_home cargo_home
  repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
  head=$(git -C "$repo" rev-parse HEAD)
  head_short=$(git -C "$repo" rev-parse --short HEAD)
  rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  if [ ! -x "$cargo_home/bin/cargo" ] || [ ! -d "$rustup_home/toolchains" ]; then
    echo "fresh-check: no rustup toolchain at $rustup_home with cargo in $cargo_home/bin" >&2
    exit 1
  fi
  if ! command -v mmdebstrap >/dev/null; then
    echo "==> installing mmdebstrap on this machine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap; }
  fi
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "fresh-check: note: uncommitted changes in $repo are not part of the check (HEAD only)"
  fi

  # This machine's apt sources, as the fresh machine would have them, and any proxy apt uses.
  local sources=() f
  [ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] && sources+=("$f")
  done
  if [ ${#sources[@]} -eq 0 ]; then
    echo "fresh-check: no apt sources in /etc/apt" >&2
    exit 1
  fi
  local aptopts=() key val
  for key in Acquire::http::Proxy Acquire::https::Proxy; do
    val=""
    eval "$(apt-config shell val "$key")"
    [ -n "$val" ] && aptopts+=(--aptopt="$key \"$val\"")
  done

  work=$(mktemp -d /var/tmp/linen-fresh.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local root=$work/root t0
  : >"$work/phases"
  echo "=== fresh-check: $mode of $head_short from $repo in $root"

  echo
  echo "=== fresh-check: root: mmdebstrap --variant=minbase bookworm (sources: ${sources[*]})"
  t0=$SECONDS
  if ! mmdebstrap --quiet --variant=minbase "${aptopts[@]}" bookworm "$root" "${sources[@]}"; then
    echo "root 1 $((SECONDS - t0))" >>"$work/phases"
    exit 1
  fi
  # Keyrings named by Signed-By in the sources but not part of the minimal root.
  local keyring
  for keyring in $(cat "${sources[@]}" | sed -nE 's/^Signed-By:\s*(\/\S+).*/\1/p; s/.*signed-by=(\/[^] ]+).*/\1/p' | sort -u); do
    if [ ! -e "$root$keyring" ] && [ -e "$keyring" ]; then
      install -D -m 0644 "$keyring" "$root$keyring"
    fi
  done
  # CAs this machine added locally: ca-certificates (installed by deps.sh) takes them in, so
  # HTTPS (cargo's downloads) works in the root as it does here.
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  fi
  echo "root 0 $((SECONDS - t0))" >>"$work/phases"
  echo "=== fresh-check: root passed in $((SECONDS - t0)) s"

  echo
  echo "=== fresh-check: clone: $head_short into /root/linen"
  t0=$SECONDS
  git init -q "$root/root/linen"
  git -C "$root/root/linen" fetch -q "$repo" "$head"
  git -C "$root/root/linen" checkout -q --detach FETCH_HEAD
  mkdir -p "$root/root/.cargo/registry"
  if [ "$cargo_cache" -eq 1 ]; then
    for f in index cache; do
      [ -d "$cargo_home/registry/$f" ] && cp -a "$cargo_home/registry/$f" "$root/root/.cargo/registry/"
    done
  fi
  echo "clone 0 $((SECONDS - t0))" >>"$work/phases"
  echo "=== fresh-check: clone passed in $((SECONDS - t0)) s"

  # In the background, so that Ctrl-C or a TERM reaches `cleanup` at once: it kills unshare,
  # whose death (--kill-child) kills the namespace's init and with it every process inside.
  unshare --mount --propagation private --pid --fork --kill-child -- \
    bash -c "set -euo pipefail; $(declare -f inside); inside \"\$@\"" fresh-check \
    "$work" "$mode" "$rustup_home" "$cargo_home" &
  inner=$!
  wait "$inner"
}

main "$@"; exit
