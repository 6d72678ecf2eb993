#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs ztgate into it; `--test` adds the test tools and the system
# packages the end-to-end tests drive (Chromium, Xvfb, x11vnc, redis-server). Safe to run again.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bash deploy/bootstrap.sh [--test]

Creates .venv (Python >= 3.12) at the repository root and installs ztgate into it. Safe to run again: it
reinstalls only when pyproject.toml changed, and recreates a .venv whose Python is older than 3.12.

  --test      also install the test tools, and the system packages the end-to-end tests drive (Chromium,
              Xvfb, x11vnc, redis-server: installed with apt-get when run as root, else listed)
  -h, --help  show this help and exit
USAGE
}

test_mode=0
for arg in "$@"; do
    case "$arg" in
        --test) test_mode=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bootstrap.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."

find_python() {
    for cand in python3.13 python3.12 python3; do
        for env in "" "PYENV_VERSION=$(ls "${PYENV_ROOT:-$HOME/.pyenv}/versions" 2>/dev/null | grep -E "^${cand#python}" | sort -V | tail -1)"; do
            if out=$(env $env "$cand" -c 'import sys; print(sys.executable if sys.version_info >= (3, 12) else "")' 2>/dev/null) && [ -n "$out" ]; then
                echo "$out"; return 0
            fi
        done
    done
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    echo "ztgate needs Python >= 3.12 (mitmproxy 12); none found" >&2
    return 1
}

extras=""
if [ "$test_mode" = 1 ]; then
    extras="[test]"
    need=()
    [ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
    command -v Xvfb >/dev/null || need+=(xvfb)
    command -v x11vnc >/dev/null || need+=(x11vnc)
    command -v redis-server >/dev/null || need+=(redis-server)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        else
            echo "missing system packages (install them, or some tests skip): ${need[*]}" >&2
        fi
    fi
fi

if [ ! -e .venv ]; then
    python=$(find_python)
    "$python" -m venv .venv
elif ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
    # Made with an older Python, half-made, or its interpreter is gone: ztgate cannot run in it. Find a suitable
    # Python first, so that .venv is cleared only when it can be rebuilt.
    python=$(find_python)
    found=$(.venv/bin/python -V 2>/dev/null | head -1 || true)
    echo "bootstrap.sh: .venv has no usable Python >= 3.12 (${found:-none}): recreating it with $python" >&2
    "$python" -m venv --clear .venv
fi
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi
