#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md with the committed tools (release build of
# `sightline` and `sightline-load`). Every server listens on loopback only; the comparison with
# Arize Phoenix runs inside a private network namespace (`unshare -n`, root) because Phoenix's
# gRPC collector binds every interface.
#
#   bench/run.sh compare   # Sightline vs Phoenix, same generator and data, RUNS times each
#   bench/run.sh million   # 1M observations: ingest, queries, dashboard, start-up, disk
#   bench/run.sh all       # both
#   bench/run.sh probe     # the 1M ingestion against the probe (serde_json + redb + tantivy
#                          # in one process, `sightline-load probe`) at three index levels
#
# Environment: RUNS (3), COMPARE_TRACES (2000 = 8,000 spans), MILLION_TRACES (250000 = 1M
# observations), OUT (results directory), PHOENIX_VENV (where arize-phoenix is installed),
# CARGO_TARGET_DIR, BENCH_BIN (prebuilt binaries instead of a build), ORDERED_IDS=1 (the 1M
# run with ids that grow with the trace, as UUIDv7 or ULIDs, instead of random ones). Results are JSON lines in $OUT; bench/summary.py prints the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-all}"
RUNS="${RUNS:-3}"
COMPARE_TRACES="${COMPARE_TRACES:-2000}"
MILLION_TRACES="${MILLION_TRACES:-250000}"
PHOENIX_VERSION="20.26.1"
PHOENIX_VENV="${PHOENIX_VENV:-$HOME/.cache/sightline-bench/phoenix-$PHOENIX_VERSION}"
OUT="${OUT:-$PWD/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release}"
KEYS=(--public-key pk-lf-load --secret-key sk-lf-load)
IDS=()
if [ "${ORDERED_IDS:-0}" = 1 ]; then IDS=(--ordered-ids); fi
mkdir -p "$OUT"
if [ -z "${BENCH_WORK:-}" ]; then
    BENCH_WORK="$(mktemp -d /tmp/sightline-bench.XXXXXX)"
    trap 'rm -rf "$BENCH_WORK"' EXIT
fi
export BENCH_WORK OUT
WORK="$BENCH_WORK"

say() { echo "bench: $*" >&2; }

machine() {
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
        echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
        echo "kernel: $(uname -r)"
        echo "rustc: $(rustc --version)"
        echo "sightline: $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)"
        echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    } > "$OUT/machine.txt"
    cat "$OUT/machine.txt" >&2
}

build() {
    if [ -n "${BENCH_BIN:-}" ]; then
        say "using the binaries in $BENCH_BIN"
        return
    fi
    say "building release binaries"
    cargo build --release --bins >&2
}

# start_sightline DIR PORT: serves DIR on 127.0.0.1:PORT with the load project's keys and a
# dashboard user; prints the pid once healthy.
start_sightline() {
    local dir="$1" port="$2"
    mkdir -p "$dir"
    SIGHTLINE_LISTEN="127.0.0.1:$port" SIGHTLINE_DATA_DIR="$dir/data" SIGHTLINE_LOG=warn \
        LANGFUSE_INIT_ORG_ID=bench LANGFUSE_INIT_PROJECT_ID=load-project \
        LANGFUSE_INIT_PROJECT_PUBLIC_KEY=pk-lf-load LANGFUSE_INIT_PROJECT_SECRET_KEY=sk-lf-load \
        LANGFUSE_INIT_USER_EMAIL=bench@example.com LANGFUSE_INIT_USER_PASSWORD=bench-password-1 \
        "$BIN/sightline" serve > "$dir/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port/api/public/health" > /dev/null; then
            echo "$pid"
            return 0
        fi
        sleep 0.05
    done
    say "sightline did not become healthy; log:"; cat "$dir/server.log" >&2
    return 1
}

stop() { kill -TERM "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }

phoenix_venv() {
    if [ ! -x "$PHOENIX_VENV/bin/phoenix" ]; then
        say "installing arize-phoenix==$PHOENIX_VERSION into $PHOENIX_VENV"
        python3 -m venv "$PHOENIX_VENV"
        "$PHOENIX_VENV/bin/pip" install -q "arize-phoenix==$PHOENIX_VERSION"
    fi
}

# One side-by-side round inside the current (private) network namespace.
compare_round() {
    local run="$1"
    local common=(--traces "$COMPARE_TRACES" --spans-per-trace 4 --batch 200
        --concurrency 4 --payload-bytes 1024 --seed "$run" --json)
    # Sightline, OTLP protobuf (the format Phoenix takes too).
    local d="$WORK/sl-otlp-$run" pid
    pid=$(start_sightline "$d" 3901)
    "$BIN/sightline-load" ingest --url http://127.0.0.1:3901 --server sightline --format otlp \
        --pid "$pid" --data-dir "$d/data" "${KEYS[@]}" "${common[@]}" >> "$OUT/compare.jsonl"
    stop "$pid"; rm -rf "$d"
    # Sightline, Langfuse batch JSON with gzip (what the Langfuse SDKs send).
    d="$WORK/sl-langfuse-$run"
    pid=$(start_sightline "$d" 3902)
    "$BIN/sightline-load" ingest --url http://127.0.0.1:3902 --server sightline --format langfuse \
        --gzip --pid "$pid" --data-dir "$d/data" "${KEYS[@]}" "${common[@]}" >> "$OUT/compare.jsonl"
    stop "$pid"; rm -rf "$d"
    # Phoenix, OTLP protobuf to /v1/traces, stored = GraphQL recordCount of the run's project.
    d="$WORK/phoenix-$run"
    mkdir -p "$d"
    PHOENIX_WORKING_DIR="$d" PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=6006 PHOENIX_GRPC_PORT=4317 \
        PHOENIX_TELEMETRY_ENABLED=false PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
        "$PHOENIX_VENV/bin/phoenix" serve > "$d.log" 2>&1 &
    pid=$!
    local t0 healthy=""
    t0=$(date +%s%N)
    for _ in $(seq 1 1200); do
        if curl -sf http://127.0.0.1:6006/healthz > /dev/null; then
            healthy=$(( ($(date +%s%N) - t0) / 1000000 ))
            break
        fi
        sleep 0.1
    done
    [ -n "$healthy" ] || { say "phoenix did not start; log:"; tail -50 "$d.log" >&2; exit 1; }
    echo "{\"server\":\"phoenix\",\"start_to_healthy_ms\":$healthy}" >> "$OUT/compare.jsonl"
    "$BIN/sightline-load" ingest --url http://127.0.0.1:6006 --server phoenix --format otlp \
        --pid "$pid" --data-dir "$d" "${KEYS[@]}" "${common[@]}" >> "$OUT/compare.jsonl"
    stop "$pid"; rm -rf "$d"
}

compare() {
    phoenix_venv
    for run in $(seq 1 "$RUNS"); do
        say "comparison round $run of $RUNS"
        # A private network namespace: loopback only, nothing listens anywhere else.
        unshare -n "$0" compare-round "$run"
    done
}

million() {
    local d="$WORK/million" pid
    pid=$(start_sightline "$d" 3903)
    say "ingesting $MILLION_TRACES traces x 4 observations"
    "$BIN/sightline-load" ingest --url http://127.0.0.1:3903 --traces "$MILLION_TRACES" \
        --spans-per-trace 4 --batch 200 --concurrency 4 --payload-bytes 1024 --seed 7 \
        --pid "$pid" --data-dir "$d/data" --stored-timeout-secs 1800 "${KEYS[@]}" "${IDS[@]}" --json \
        > "$OUT/million-ingest.json"
    # A second, small ingestion into the full store: throughput and search lag at 1M.
    "$BIN/sightline-load" ingest --url http://127.0.0.1:3903 --traces 2000 --seed 8 \
        --pid "$pid" --data-dir "$d/data" "${KEYS[@]}" "${IDS[@]}" --json > "$OUT/million-ingest-more.json"
    say "querying"
    for run in $(seq 1 "$RUNS"); do
        "$BIN/sightline-load" query --url http://127.0.0.1:3903 --seed 7 \
            --traces "$MILLION_TRACES" --spans-per-trace 4 --also 8:2000 --iterations 50 --budget-secs 20 "${KEYS[@]}" "${IDS[@]}" \
            --ui-email bench@example.com --ui-password bench-password-1 \
            --project load-project --json >> "$OUT/million-query.jsonl"
    done
    # Idle: after the memory task's quiet spell (2 s) has passed.
    sleep 5
    echo "{\"idle_rss_mib_after_queries\":$(awk '/VmRSS/ {print $2/1024}' "/proc/$pid/status"),\"idle_rss_anon_mib_after_queries\":$(awk '/RssAnon/ {print $2/1024}' "/proc/$pid/status")}" \
        > "$OUT/million-rss.json"
    stop "$pid"
    "$BIN/sightline" disk-usage --data-dir "$d/data" > "$OUT/million-disk.json"
    say "rebuilding the search index (sightline reindex) on the 1M store"
    local t0
    t0=$(date +%s%N)
    SIGHTLINE_LOG=warn "$BIN/sightline" reindex --data-dir "$d/data" > "$d/reindex.log" 2>&1
    echo "{\"reindex_ms\":$(( ($(date +%s%N) - t0) / 1000000 )),\"search_index_bytes_after\":$(du -sb "$d/data/search" | cut -f1)}" \
        > "$OUT/million-reindex.json"
    say "start-up on the 1M store"
    "$BIN/sightline-load" startup --bin "$BIN/sightline" --data-dir "$d/data" \
        --listen 127.0.0.1:3904 --repeat "$RUNS" --json > "$OUT/million-startup.json"
    rm -rf "$d"
}

# Sightline's 1M ingestion (million's generator parameters), then the probe over the same
# traces at each index level; RUNS rounds alternating, each round a seed of its own.
probe() {
    local common=(--traces "$MILLION_TRACES" --spans-per-trace 4 --batch 200 --concurrency 4
        --payload-bytes 1024 --json)
    for run in $(seq 1 "$RUNS"); do
        say "probe round $run of $RUNS: sightline"
        local d="$WORK/probe-$run" pid
        pid=$(start_sightline "$d" 3905)
        "$BIN/sightline-load" ingest --url http://127.0.0.1:3905 --seed "$((200 + run))" \
            --pid "$pid" --data-dir "$d/data" --stored-timeout-secs 1800 "${KEYS[@]}" "${IDS[@]}" \
            "${common[@]}" >> "$OUT/probe.jsonl"
        stop "$pid"; rm -rf "$d"
        for level in positions text none; do
            say "probe round $run of $RUNS: probe, index $level"
            "$BIN/sightline-load" probe --seed "$((200 + run))" --index "$level" "${IDS[@]}" \
                "${common[@]}" >> "$OUT/probe.jsonl"
        done
    done
}

if [ "$MODE" = compare-round ]; then
    ip link set lo up
    compare_round "$2"
    exit 0
fi

machine
build
case "$MODE" in
    compare) compare ;;
    million) million ;;
    all) compare; million ;;
    probe) probe ;;
    *) echo "usage: bench/run.sh [compare|million|all|probe]" >&2; exit 2 ;;
esac
python3 bench/summary.py "$OUT"
