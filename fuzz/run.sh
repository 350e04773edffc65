#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 30), seeded with the recorded client
# requests in ../shared/fixtures. Exits non-zero on the first crash, leak or timeout, leaving the
# input in fuzz/artifacts/<target>/. Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it accept the -Z flags cargo-fuzz passes
# (sanitizer coverage, -Zsanitizer=address; stable ships the AddressSanitizer runtime for
# x86_64 Linux). RUSTUP_TOOLCHAIN=stable keeps a nightly toolchain, if one is installed, out of
# the picture (FUZZ_TOOLCHAIN overrides it). Installs the pinned cargo-fuzz when missing.
# Uses $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set (instrumented artifacts never mix
# with the test build's). FUZZ_CODEGEN_UNITS (default 1, cargo-fuzz's: the least CPU for a
# build from scratch and the fastest runs; 16 rebuilds one changed crate sooner on idle cores).
# A summary (executions per target) goes to $FUZZ_SUMMARY if set.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR="$(pwd)"
ROOT="$(cd .. && pwd)"

say() { echo "fuzz/run.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

SECONDS_EACH="${1:-30}"
shift || true
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, got $SECONDS_EACH"
ALL_TARGETS=(ingest_batch otlp_protobuf otlp_json search_query)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

FIXTURES="$ROOT/../shared/fixtures"
[ -d "$FIXTURES" ] || die "$FIXTURES not found: the corpora are seeded from the recorded client traffic"

CARGO_FUZZ_VERSION=0.13.2
CODEGEN_UNITS="${FUZZ_CODEGEN_UNITS:-1}"
[[ "$CODEGEN_UNITS" =~ ^[0-9]+$ ]] || die "FUZZ_CODEGEN_UNITS must be a whole number"
export RUSTUP_TOOLCHAIN="${FUZZ_TOOLCHAIN:-stable}"
export RUSTC_BOOTSTRAP=1
command -v cargo >/dev/null 2>&1 || die "cargo not found"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    install_started=$(date +%s)
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked 1>&2 \
        || die "cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked failed"
    say "install took $(( $(date +%s) - install_started )) s"
fi

TARGET_ARGS=(--codegen-units "$CODEGEN_UNITS")
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    TARGET_ARGS+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi

# Seed corpora (never committed: they are copies of ../shared/fixtures plus what libFuzzer finds).
seed() {
    local target="$1" dir="$FUZZ_DIR/corpus/$1"
    mkdir -p "$dir"
    case "$target" in
        ingest_batch)
            for f in "$FIXTURES"/*/*-POST-api-public-ingestion.body.json \
                     "$FIXTURES"/*/*-POST-api-public-ingestion.body.decompressed.json \
                     "$FIXTURES"/*/*-POST-api-public-scores.body.json; do
                [ -f "$f" ] && cp "$f" "$dir/fixture-$(basename "$(dirname "$f")")-$(basename "$f")"
            done ;;
        otlp_protobuf)
            # Uncompressed protobuf: the decompressed copy when the client gzipped its body.
            for f in "$FIXTURES"/*/*-otel-v1-traces.body.bin; do
                local plain="${f%.body.bin}.body.decompressed.bin"
                [ -f "$plain" ] && f="$plain"
                cp "$f" "$dir/fixture-$(basename "$(dirname "$f")")-$(basename "$f")"
            done ;;
        otlp_json)
            for f in "$FIXTURES"/*/*-otel-v1-traces.decoded.json "$FIXTURES"/*/*-otel-v1-traces.body.json; do
                [ -f "$f" ] && cp "$f" "$dir/fixture-$(basename "$(dirname "$f")")-$(basename "$f")"
            done ;;
        search_query)
            local i=0
            while IFS= read -r q; do
                i=$((i + 1))
                printf '%s' "$q" >"$dir/seed-$i"
            done <<'QUERIES'
refund policy
"exact phrase" -excluded
gpt-4o OR claude*
name:chat-completion level:ERROR
(input:hello OR output:"bonjour le monde") -tags:test
model:"gpt-4o-mini" userId:alice sessionId:s1
东京 天气
Straße مرحبا
12:30 http://example.com/x
NOT (a OR (b AND -c*))
QUERIES
            ;;
    esac
    local n
    n=$(find "$dir" -type f | wc -l)
    [ "$n" -gt 0 ] || die "no seed inputs for $target"
}

say "building ${TARGETS[*]} ($(rustc --version), cargo-fuzz $CARGO_FUZZ_VERSION, $CODEGEN_UNITS codegen units)"
build_started=$(date +%s)
cargo fuzz build "${TARGET_ARGS[@]}" 1>&2
say "build took $(( $(date +%s) - build_started )) s"

summary=""
for target in "${TARGETS[@]}"; do
    seed "$target"
    log="$(mktemp)"
    say "running $target for ${SECONDS_EACH}s"
    if ! cargo fuzz run "${TARGET_ARGS[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        die "$target failed; the input is in fuzz/artifacts/$target/ (reproduce: RUSTC_BOOTSTRAP=1 cargo +$RUSTUP_TOOLCHAIN fuzz run $target <file>)"
    fi
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
    rm -f "$log"
    line="$target: ${runs:-?} executions in ${SECONDS_EACH}s, coverage ${cov:-?} edges, no crash"
    say "$line"
    summary+="$line"$'\n'
done
if [ -n "${FUZZ_SUMMARY:-}" ]; then
    printf '%s' "$summary" >"$FUZZ_SUMMARY"
fi
