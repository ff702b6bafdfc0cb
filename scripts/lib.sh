# Shared by scripts/demo, scripts/e2e-codex, scripts/e2e-clients and scripts/bench (sourced, not run): build the
# release binaries, start the offline mock upstream and a proxy, read server-info files, and
# stop everything that was started when the calling script exits.
#
# Needs bash 4.4+, python3 (jq is used when present), coreutils `timeout`.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="$ROOT/target/release"
PROXY_BIN="$RELEASE/codex-proxy"
MOCK_BIN="$RELEASE/examples/mock_upstream"

# A scratch directory removed on exit; every child started through this file is ended on exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/codex-proxy.XXXXXX")
_children=()

_cleanup() {
    local pid
    for pid in "${_children[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${_children[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# build_release [extra cargo args...]: the proxy and the mock upstream, optimised.
build_release() {
    (cd "$ROOT" && cargo build --release --locked --bins --example mock_upstream "$@")
}

# json_field FILE KEY: one top-level field of a one-line JSON file.
json_field() {
    if command -v jq >/dev/null 2>&1; then
        jq -er --arg k "$2" '.[$k]' "$1"
    else
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
    fi
}

# wait_for_line FILE SECONDS: until FILE holds a complete first line.
wait_for_line() {
    local file=$1 deadline=$((SECONDS + $2))
    until [ -s "$file" ] && [ "$(tail -c 1 "$file" | od -An -c | tr -d ' ')" = '\n' ]; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# start_mock [mock args...]: sets MOCK_PID, MOCK_PORT, MOCK_URL (http://127.0.0.1:PORT/v1).
# The mock reads its stdin from a pipe this shell holds, so it also exits if this shell dies.
start_mock() {
    start_upstream "$MOCK_BIN" "$@"
}

# start_upstream BINARY [args...]: like start_mock, for any mock upstream that prints its port
# and takes --exit-on-stdin-eof (examples/mock_upstream, examples/scenario_upstream).
start_upstream() {
    local bin=$1 port_file="$WORK/mock.port"
    shift
    rm -f "$port_file"
    exec {MOCK_STDIN}> >(exec "$bin" --exit-on-stdin-eof "$@" >"$port_file" 2>"$WORK/mock.log")
    MOCK_PID=$!
    _children+=("$MOCK_PID")
    wait_for_line "$port_file" 30 || die "the mock upstream did not report its port (see $WORK/mock.log)"
    MOCK_PORT=$(head -n 1 "$port_file")
    MOCK_URL="http://127.0.0.1:$MOCK_PORT/v1"
}

# start_proxy NAME KEY COMMAND... : runs COMMAND (a proxy binary and its arguments, without
# --server-info) with KEY on stdin and "--server-info $WORK/NAME.json" appended, stderr to
# $WORK/NAME.log. Sets PROXY_PID, PROXY_PORT, PROXY_INFO, PROXY_LOG.
start_proxy() {
    local name=$1 key=$2
    shift 2
    PROXY_INFO="$WORK/$name.json"
    PROXY_LOG="$WORK/$name.log"
    rm -f "$PROXY_INFO"
    printf '%s\n' "$key" | "$@" --server-info "$PROXY_INFO" 2>"$PROXY_LOG" &
    PROXY_PID=$!
    _children+=("$PROXY_PID")
    if ! wait_for_line "$PROXY_INFO" 30; then
        cat "$PROXY_LOG" >&2
        die "$name did not write its server-info file"
    fi
    PROXY_PORT=$(json_field "$PROXY_INFO" port)
}

# wait_exit PID SECONDS: waits for a child started above; its exit status, or 124 on timeout.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2)) rc=0
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 124
        sleep 0.05
    done
    wait "$pid" || rc=$?
    return "$rc"
}
