#!/usr/bin/env bash
# Installs the Debian packages frugal builds against. Idempotent: does nothing when all are present.
# CUDA (nvcc, cuBLAS, cuDNN, NCCL) is not a Debian package here; it is found if installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev libtbb-dev libgtest-dev libgmock-dev libbenchmark-dev
  libdlpack-dev nlohmann-json3-dev zlib1g-dev
  libopenmpi-dev openmpi-bin libdnnl-dev
  python3-sklearn
)
# Optional tools: used when present, never required.
optional=(ccache clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}" "${optional[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "[setup] installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Optional packages may be unavailable; install them one by one without failing.
required_missing=()
for p in "${missing[@]}"; do
  case " ${optional[*]} " in *" $p "*) ;; *) required_missing+=("$p") ;; esac
done
if [ ${#required_missing[@]} -gt 0 ]; then
  $sudo apt-get install -y -qq --no-install-recommends "${required_missing[@]}"
fi
for p in "${optional[@]}"; do
  case " ${missing[*]} " in *" $p "*) $sudo apt-get install -y -qq --no-install-recommends "$p" || true ;; esac
done
