#!/usr/bin/env bash
# Build the Linux bundle (dist/synopsis/) and a .deb (dist/synopsis_VERSION_amd64.deb)
# from a clean checkout: a private virtual environment, PyInstaller, dpkg-deb.
#
# Usage: packaging/build-linux.sh [--no-deb] [--smoke-test]
#
# Environment:
#   PYTHON                    interpreter for the build venv (default: python3, 3.10 to 3.13)
#   SYNOPSIS_TORCH            cpu (default) or cuda: which torch build goes into the bundle
#   SYNOPSIS_TORCH_VERSION    torch release to install (default: 2.13.0)
#   SYNOPSIS_TORCH_INDEX_URL  pip index for torch; defaults to PyTorch's cpu or cu128 index,
#                             and an empty value uses pip's configured index instead
#   SYNOPSIS_BUILD_VENV       venv folder (default: build/venv-linux); an existing one is reused
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

BUILD_DEB=1
SMOKE_TEST=0
for argument in "$@"; do
    case "$argument" in
        --no-deb) BUILD_DEB=0 ;;
        --smoke-test) SMOKE_TEST=1 ;;
        *) echo "build-linux.sh: unknown option $argument (use --no-deb or --smoke-test)" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-python3}"
VARIANT="${SYNOPSIS_TORCH:-cpu}"
TORCH_VERSION="${SYNOPSIS_TORCH_VERSION:-2.13.0}"
case "$VARIANT" in
    cpu) DEFAULT_INDEX="https://download.pytorch.org/whl/cpu" ;;
    cuda) DEFAULT_INDEX="https://download.pytorch.org/whl/cu128" ;;
    *) echo "build-linux.sh: SYNOPSIS_TORCH must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;;
esac
TORCH_INDEX_URL="${SYNOPSIS_TORCH_INDEX_URL-$DEFAULT_INDEX}"
VENV="${SYNOPSIS_BUILD_VENV:-build/venv-linux}"

echo "==> build venv $VENV (torch $TORCH_VERSION, $VARIANT)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
TORCH_ARGS=("torch==$TORCH_VERSION")
if [ -n "$TORCH_INDEX_URL" ]; then
    TORCH_ARGS+=(--index-url "$TORCH_INDEX_URL")
fi
# torch comes first and from its own index: a plain `pip install .` on Linux
# would resolve torch from PyPI, which is the CUDA build with ~2.3 GB of
# nvidia wheels.
"$VENV/bin/python" -m pip install --quiet "${TORCH_ARGS[@]}"
"$VENV/bin/python" -m pip install --quiet "$ROOT" -r packaging/requirements-build.txt

echo "==> PyInstaller"
SYNOPSIS_TORCH="$VARIANT" "$VENV/bin/python" -m PyInstaller --noconfirm --clean \
    --distpath dist --workpath build/pyinstaller packaging/synopsis.spec
du -sh dist/synopsis

if [ "$SMOKE_TEST" = 1 ]; then
    echo "==> smoke test"
    "$VENV/bin/python" packaging/smoke_test.py dist/synopsis --report dist/smoke-test-linux.json
fi

if [ "$BUILD_DEB" = 1 ]; then
    echo "==> .deb"
    packaging/linux/build-deb.sh dist/synopsis "$VARIANT"
fi
