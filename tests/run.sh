#!/usr/bin/env bash
# THE test command. On a fresh Debian machine (as root) it installs what the tests need, then runs
# every test target. Extra arguments go to `cargo test` (e.g. `tests/run.sh crash`).
#
# Needs: cargo, python3 with working venv support (installed here via apt-get when missing), the
# package index for pip (the SDK tests build their venvs under <target>/test-venvs), and
# ../shared beside the repository (recorded client traffic and specs).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "tests/run.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found; install the Rust toolchain first"
[ -d ../shared/fixtures ] || die "../shared/fixtures not found beside $(pwd): the tests replay the recorded client traffic kept there"

# A real trial: some Pythons import `venv` fine but cannot create one (Debian without python3-venv).
python_venv_works() {
    command -v python3 >/dev/null 2>&1 || return 1
    local probe
    probe="$(mktemp -d)"
    if python3 -m venv "$probe/venv" >/dev/null 2>&1 && "$probe/venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}

if ! python_venv_works; then
    say "python3 with venv + pip support is missing; installing it with apt-get"
    [ "$(id -u)" = 0 ] || die "not root: install python3, python3-venv and python3-pip yourself"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install python3 with the venv module and pip yourself"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null \
        || die "apt-get install python3 python3-venv python3-pip failed"
    python_venv_works || die "python3 -m venv still does not work after installing python3-venv"
fi
say "using $(python3 --version 2>&1) at $(command -v python3)"

# The systemd unit test runs `systemd-analyze verify` (systemd is on Debian images; make sure).
if ! command -v systemd-analyze >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "systemd-analyze missing and not root: install systemd yourself"
    say "installing systemd for systemd-analyze"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd >/dev/null \
        || die "apt-get install systemd failed"
fi

# The systemd unit test runs the server under strace to list the system calls it makes.
if ! command -v strace >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "strace missing and not root: apt-get install strace"
    say "installing strace for the systemd unit's system call test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends strace >/dev/null \
        || die "apt-get install strace failed"
fi

# The dashboard's browser test drives Debian's headless Chromium through its chromedriver (never a
# browser download).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    [ "$(id -u)" = 0 ] || die "chromium/chromedriver missing and not root: apt-get install chromium chromium-driver"
    say "installing chromium and chromium-driver for the dashboard browser test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
        || die "apt-get install chromium chromium-driver failed"
fi

say "cargo test --all-targets $*"
exec cargo test --all-targets "$@"
