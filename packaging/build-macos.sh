#!/usr/bin/env bash
# Build Synopsis.app and a .dmg (dist/Synopsis-VERSION-macos-ARCH.dmg) from a
# clean checkout; sign and notarize them when credentials are given.
#
# Usage: packaging/build-macos.sh [--smoke-test] [--no-dmg]
#
# Environment:
#   PYTHON                     interpreter for the build venv (default: python3, 3.10 to 3.13)
#   SYNOPSIS_TORCH_VERSION     torch release (default: 2.13.0); macOS wheels on PyPI are the CPU/MPS build
#   SYNOPSIS_CODESIGN_IDENTITY "Developer ID Application: NAME (TEAMID)"; unset: the app keeps
#                              PyInstaller's ad-hoc signature, which Gatekeeper rejects on other Macs
#   SYNOPSIS_NOTARY_PROFILE    keychain profile made once with
#                              xcrun notarytool store-credentials PROFILE --apple-id ID --team-id TEAMID
#                              (or --key/--key-id/--issuer for an App Store Connect API key);
#                              unset: no notarization
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SMOKE_TEST=0
BUILD_DMG=1
for argument in "$@"; do
    case "$argument" in
        --smoke-test) SMOKE_TEST=1 ;;
        --no-dmg) BUILD_DMG=0 ;;
        *) echo "build-macos.sh: unknown option $argument (use --smoke-test or --no-dmg)" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${SYNOPSIS_TORCH_VERSION:-2.13.0}"
VENV="build/venv-macos"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' engine/__init__.py)"
ARCH="$(uname -m)"
APP="dist/Synopsis.app"
ENTITLEMENTS="packaging/macos/entitlements.plist"

echo "==> build venv $VENV (torch $TORCH_VERSION)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install --quiet "$ROOT" -r packaging/requirements-build.txt

echo "==> PyInstaller"
SYNOPSIS_TORCH=cpu "$VENV/bin/python" -m PyInstaller --noconfirm --clean \
    --distpath dist --workpath build/pyinstaller packaging/synopsis.spec
du -sh "$APP"

if [ "$SMOKE_TEST" = 1 ]; then
    echo "==> smoke test"
    "$VENV/bin/python" packaging/smoke_test.py "$APP" --report dist/smoke-test-macos.json
fi

# The test driver is not shipped; it must go before signing, because removing
# a file afterwards breaks the bundle's signature.
rm -f "$APP/Contents/MacOS/synopsis-smoke"

if [ -n "${SYNOPSIS_CODESIGN_IDENTITY:-}" ]; then
    echo "==> codesign with $SYNOPSIS_CODESIGN_IDENTITY"
    # Inside out: every Mach-O file first, then the app. The hardened runtime
    # (--options runtime) and a secure timestamp are required for notarization.
    find "$APP/Contents" -type f \( -perm -u+x -o -name '*.so' -o -name '*.dylib' \) -print0 |
        while IFS= read -r -d '' file; do
            if file "$file" | grep -q 'Mach-O'; then
                codesign --force --timestamp --options runtime --entitlements "$ENTITLEMENTS" \
                    --sign "$SYNOPSIS_CODESIGN_IDENTITY" "$file"
            fi
        done
    codesign --force --timestamp --options runtime --entitlements "$ENTITLEMENTS" \
        --sign "$SYNOPSIS_CODESIGN_IDENTITY" "$APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
fi

if [ "$BUILD_DMG" = 1 ]; then
    echo "==> .dmg"
    DMG="dist/Synopsis-$VERSION-macos-$ARCH.dmg"
    STAGE="build/dmg"
    rm -rf "$STAGE" "$DMG"
    mkdir -p "$STAGE"
    cp -R "$APP" "$STAGE/"
    ln -s /Applications "$STAGE/Applications"  # drag-to-install target
    hdiutil create -volname "Synopsis" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
    if [ -n "${SYNOPSIS_CODESIGN_IDENTITY:-}" ]; then
        codesign --force --timestamp --sign "$SYNOPSIS_CODESIGN_IDENTITY" "$DMG"
    fi
    if [ -n "${SYNOPSIS_NOTARY_PROFILE:-}" ]; then
        echo "==> notarize $DMG"
        xcrun notarytool submit "$DMG" --keychain-profile "$SYNOPSIS_NOTARY_PROFILE" --wait
        xcrun stapler staple "$DMG"
        spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
    fi
    ls -lh "$DMG"
fi
