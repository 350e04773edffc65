#!/bin/sh
# Builds one self-contained sightline binary: glibc and every Rust dependency linked in
# statically, no shared library needed at run time (assets, price table and tokenizer data are
# embedded already). Prints where it is and how large, as built and stripped.
#
#   scripts/release-build.sh            # honours CARGO_TARGET_DIR
#
# Needs the static glibc (libc6-dev on Debian/Ubuntu, glibc-static on Fedora). The target is
# named explicitly so that crt-static applies to the binary only, not to build scripts and
# proc macros (which must stay dynamic).
set -eu
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/release/sightline"

# "not a dynamic executable" (or "statically linked") is what a self-contained binary says.
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "error: $bin links shared libraries:" >&2
    ldd "$bin" >&2
    exit 1
fi
"$bin" --version

size=$(stat -c %s "$bin")
stripped="$bin.stripped"
strip -o "$stripped" "$bin"
ssize=$(stat -c %s "$stripped")
echo "$bin: $size bytes ($((size / 1048576)) MiB), statically linked"
echo "$stripped: $ssize bytes ($((ssize / 1048576)) MiB) without the symbol table"
