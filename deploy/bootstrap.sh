#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs ztgate into it; `--test` adds the test tools and the system
# packages the end-to-end tests drive (Chromium, Xvfb, x11vnc, redis-server). Safe to run again.
set -euo pipefail
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
if [ "${1:-}" = "--test" ]; then
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

if [ ! -x .venv/bin/python ]; then
    "$(find_python)" -m venv .venv
fi
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi
