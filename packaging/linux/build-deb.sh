#!/usr/bin/env bash
# Wrap a frozen Linux bundle into a .deb: /opt/synopsis, /usr/bin/synopsis,
# the desktop entry and the icons from resources/.
#
# Usage: packaging/linux/build-deb.sh BUNDLE_DIR [cpu|cuda]
# Needs dpkg-deb, and dpkg-shlibdeps (Debian package dpkg-dev) to compute Depends.
# Environment: SYNOPSIS_DEB_MAINTAINER ("Name <address>"), SYNOPSIS_HOMEPAGE (URL),
# SYNOPSIS_DEB_COMPRESSION (xz by default; gzip or zstd).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUNDLE="$(cd "${1:?usage: build-deb.sh BUNDLE_DIR [cpu|cuda]}" && pwd)"
VARIANT="${2:-cpu}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/engine/__init__.py")"
ARCHITECTURE="$(dpkg --print-architecture)"
# NOTE: a placeholder address; set SYNOPSIS_DEB_MAINTAINER for a published package.
MAINTAINER="${SYNOPSIS_DEB_MAINTAINER:-Synopsis maintainers <maintainers@synopsis.invalid>}"
COMPRESSION="${SYNOPSIS_DEB_COMPRESSION:-xz}"
SUFFIX=""
[ "$VARIANT" = cuda ] && SUFFIX="-cuda"
NAME="synopsis${SUFFIX}_${VERSION}_${ARCHITECTURE}"
STAGE="$ROOT/build/deb/$NAME"

if [ ! -x "$BUNDLE/synopsis" ]; then
    echo "build-deb.sh: $BUNDLE/synopsis not found; run packaging/build-linux.sh first" >&2
    exit 1
fi

rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/256x256/apps" "$STAGE/usr/share/icons/hicolor/scalable/apps" \
    "$STAGE/usr/share/doc/synopsis"
cp -a "$BUNDLE" "$STAGE/opt/synopsis"
rm -f "$STAGE/opt/synopsis/synopsis-smoke"  # the test driver is not shipped
ln -s /opt/synopsis/synopsis "$STAGE/usr/bin/synopsis"
install -m 644 "$ROOT/resources/synopsis.desktop" "$STAGE/usr/share/applications/synopsis.desktop"
install -m 644 "$ROOT/resources/synopsis.png" "$STAGE/usr/share/icons/hicolor/256x256/apps/synopsis.png"
install -m 644 "$ROOT/resources/synopsis.svg" "$STAGE/usr/share/icons/hicolor/scalable/apps/synopsis.svg"
cat > "$STAGE/usr/share/doc/synopsis/copyright" <<COPYRIGHT
Synopsis is licensed under the Apache License 2.0 (see /usr/share/common-licenses/Apache-2.0).
/opt/synopsis bundles Python, Qt for Python (LGPLv3), PyTorch (BSD-3-Clause),
transformers (Apache-2.0) and their dependencies under their own licenses.
COPYRIGHT

# System libraries the bundle links against but PyInstaller leaves out
# (libc, OpenGL, X11 and xcb, fontconfig...), as package names with versions.
echo "==> computing Depends with dpkg-shlibdeps"
SHLIB_WORK="$(mktemp -d)"
trap 'rm -rf "$SHLIB_WORK"' EXIT
mkdir -p "$SHLIB_WORK/debian"
printf 'Source: synopsis\n\nPackage: synopsis\nArchitecture: any\n' > "$SHLIB_WORK/debian/control"
# The GTK platform theme plugin is left out of the scan: Qt loads it only on
# desktops that have GTK 3, and skips it elsewhere, so it must not pull GTK in.
# Every library it scans must be installed here (the Wayland plugins need
# libwayland-cursor0 and libwayland-egl1), or dpkg-shlibdeps stops.
mapfile -t ELF_FILES < <(find "$STAGE/opt/synopsis" -type f \( -name '*.so*' -o -perm -u+x \) ! -name 'libqgtk3.so' \
    -exec sh -c 'head -c 4 "$1" | grep -q "ELF" && echo "$1"' _ {} \;)
LIBRARY_DIRS="$(find "$STAGE/opt/synopsis" -type f -name '*.so*' -printf '%h\n' | sort -u | paste -sd: -)"
DEPENDS="$(cd "$SHLIB_WORK" && LD_LIBRARY_PATH="$LIBRARY_DIRS" dpkg-shlibdeps -O --ignore-missing-info --warnings=0 "${ELF_FILES[@]}" | sed -n 's/^shlibs:Depends=//p')"
if [ -z "$DEPENDS" ]; then
    echo "build-deb.sh: dpkg-shlibdeps found no dependencies; is dpkg-dev installed?" >&2
    exit 1
fi

INSTALLED_SIZE="$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCHITECTURE@|$ARCHITECTURE|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" -e "s|@DEPENDS@|$DEPENDS|" -e "s|@TORCH_VARIANT@|$VARIANT|" \
    "$ROOT/packaging/linux/control.in" > "$STAGE/DEBIAN/control"
if [ -n "${SYNOPSIS_HOMEPAGE:-}" ]; then
    echo "Homepage: $SYNOPSIS_HOMEPAGE" >> "$STAGE/DEBIAN/control"
fi

mkdir -p "$ROOT/dist"
dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$STAGE" "$ROOT/dist/$NAME.deb"
ls -l "$ROOT/dist/$NAME.deb"
