#!/usr/bin/env bash
# Install MIKASA-Robo (on ManiSkill3) and a working software Vulkan for CPU-only machines.
#
# Idempotent and non-interactive (CI runs it as root on a fresh Debian 12 machine).
#   bash scripts/install_mikasa.sh            # everything
#   SKIP_VULKAN=1 bash scripts/install_mikasa.sh   # Python packages only (e.g. on a GPU box
#                                                   # whose driver already provides Vulkan)
#
# What it does, and why:
#  1. pip: mani-skill==3.0.1 (runs with gymnasium 1.x / numpy 2) with the installed torch pinned by a
#     constraint, so pip can never swap the CPU torch for a multi-GB CUDA build; then
#     mikasa-robo-suite==1.0.0 with --no-deps, because its own pins (torch==2.2.1,
#     mani_skill==3.0.0b15, numpy==1.23.5, gymnasium==0.29.1) would break the environment.
#  2. Vulkan: ManiSkill always creates a SAPIEN renderer, even for state observations. Debian 12's
#     lavapipe (Mesa 22.3) is refused by SAPIEN ("Failed to find a supported physical device");
#     Mesa 25 lavapipe from bookworm-backports works. We unpack that one package into the ignored
#     project folder .vulkan/ (nothing system-wide is replaced) and write an ICD json for it.
#     envs/mikasa.py sets VK_ICD_FILENAMES to it by itself when the variable is unset.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
VK_DIR="$ROOT/.vulkan"
MESA_VERSION="${MESA_VERSION:-25.0.7-2~bpo12+1}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "[install_mikasa] $*"; }

# ---------------------------------------------------------------- Python packages
TORCH_VERSION="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [ -z "$TORCH_VERSION" ]; then
    echo "[install_mikasa] torch is not installed: install the CPU build first (see README)" >&2
    exit 1
fi
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
# Pin what must not move: torch (the build the user chose) and numpy/gymnasium majors.
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

if "$PYTHON" -c 'import importlib.metadata as m; assert m.version("mani_skill") == "3.0.1"' 2>/dev/null; then
    log "mani-skill 3.0.1 already installed"
else
    log "installing mani-skill==3.0.1 (torch pinned to $TORCH_VERSION)"
    "$PYTHON" -m pip install --quiet "mani-skill==3.0.1" -c "$CONSTRAINTS"
fi
if "$PYTHON" -c 'import importlib.metadata as m; assert m.version("mikasa_robo_suite") == "1.0.0"' 2>/dev/null; then
    log "mikasa-robo-suite 1.0.0 already installed"
else
    log "installing mikasa-robo-suite==1.0.0 --no-deps"
    "$PYTHON" -m pip install --quiet --no-deps "mikasa-robo-suite==1.0.0"
fi
AFTER="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
if [ "$AFTER" != "$TORCH_VERSION" ]; then
    echo "[install_mikasa] torch changed from $TORCH_VERSION to $AFTER: aborting" >&2
    exit 1
fi

# ---------------------------------------------------------------- software Vulkan
if [ "${SKIP_VULKAN:-0}" = "1" ]; then
    log "SKIP_VULKAN=1: not installing the software Vulkan"
    exit 0
fi
LVP_SO="$(find "$VK_DIR" -name libvulkan_lvp.so 2>/dev/null | head -n 1 || true)"
if [ -n "$LVP_SO" ] && [ -f "$VK_DIR/lvp_icd.json" ] && ldconfig -p | grep -q 'libvulkan.so.1'; then
    log "software Vulkan already in $VK_DIR"
else
    if [ "$(id -u)" != "0" ]; then
        echo "[install_mikasa] the Vulkan step needs root (apt-get); rerun as root or with SKIP_VULKAN=1" >&2
        exit 1
    fi
    # bookworm-backports carries Mesa 25; add it only if no source lists it yet.
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to apt sources"
        cat > /etc/apt/sources.list.d/elmur-bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    apt-get update -qq
    TMP="$(mktemp -d)"
    chmod 777 "$TMP"   # so that apt's sandbox user (_apt) can write the download there
    (cd "$TMP" && apt-get download -qq "mesa-vulkan-drivers=$MESA_VERSION")
    DEB="$(ls "$TMP"/mesa-vulkan-drivers_*.deb)"
    # Lavapipe's runtime dependencies (the Vulkan loader libvulkan1, libLLVM-15, xcb, ...) all exist
    # in plain bookworm under the same names; install those by name (versions as bookworm has them:
    # lavapipe resolves and runs against them, e.g. libdrm 2.4.114 for its declared >= 2.4.121).
    # We never install mesa-vulkan-drivers itself, so the system's Mesa stays as it is.
    DEPS="$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed -E 's/^ *//; s/ *\(.*//; s/ *\|.*//' | grep -v '^$')"
    log "installing lavapipe's runtime dependencies: $(echo $DEPS)"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $DEPS >/dev/null
    rm -rf "$VK_DIR"
    mkdir -p "$VK_DIR"
    dpkg-deb -x "$DEB" "$TMP/x"
    cp "$(find "$TMP/x" -name libvulkan_lvp.so | head -n 1)" "$VK_DIR/"
    rm -rf "$TMP"
    LVP_SO="$VK_DIR/libvulkan_lvp.so"
    if ldd "$LVP_SO" | grep -q 'not found'; then
        echo "[install_mikasa] lavapipe has unresolved libraries:" >&2
        ldd "$LVP_SO" | grep 'not found' >&2
        exit 1
    fi
fi
cat > "$VK_DIR/lvp_icd.json" <<JSON
{
    "file_format_version": "1.0.0",
    "ICD": {
        "library_path": "$LVP_SO",
        "api_version": "1.4.305"
    }
}
JSON
log "software Vulkan ready; envs/mikasa.py uses it automatically, or export it yourself:"
echo "export VK_ICD_FILENAMES=$VK_DIR/lvp_icd.json"
