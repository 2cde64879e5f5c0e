#!/usr/bin/env bash
# The device runtime on ARM: the committed CIFAR-10 models' bundles run in an emulated aarch64 Linux with the
# project's device installs, against the same bundles on this x86 machine, image by image (scripts/arm_compare.py).
#
#   sudo scripts/arm_check.sh [ENV_DIR]      (default: /var/tmp/adaptive-edge-arm; ~6 GB with ExecuTorch)
#
# From a fresh Debian 12 / Ubuntu x86_64 machine, as root (binfmt_misc, debootstrap, chroot need it), from
# registry packages only (apt, the Debian archive, PyPI):
#   1. qemu-user-static + binfmt_misc, so the kernel runs aarch64 programs through qemu;
#   2. a Debian arm64 root filesystem (debootstrap) with Debian's python3, in ENV_DIR/rootfs;
#   3. in it, two venvs that do the device installs: /opt/venv-ort: pip install ".[device-onnxruntime]",
#      /opt/venv-et: pip install ".[device-executorch]" (torch from PyPI for aarch64 pulls CUDA wheels: 5.6 GB);
#   4. on x86 (.venv, scripts/venv.sh): the bundles (each checkpoint x onnx/executorch x fp32/int8) and the images;
#   5. `arm_compare.py run` on x86 and in the emulated system, on both backends; then the report:
#      benchmarks/results/arm.{md,json}.
# Idempotent: each step checks whether it is done. The first run took ~37 min (most of it the emulated
# ExecuTorch install); a rerun reinstalls the project alone when its sources changed, and reruns the checks.
# No timing is taken: under emulation it means nothing. Skips cleanly (exit 0) without the CIFAR-10 test images.
#
# Knobs: WITH_ET=0 (onnxruntime only: ~470 MB, ~12 min), QEMU_CPU=cortex-a76, NICE_LEVEL=5, SUITE=bookworm,
#   MIRROR=http://deb.debian.org/debian, DATA_ROOT (default ../shared/data/cifar10), OUT (the report, without
#   suffix; default benchmarks/results/arm), IMAGES=1000, ARM_IMAGES (default IMAGES: the first of them run emulated),
#   ET_ARM_IMAGES (default ARM_IMAGES: ExecuTorch's share). Emulated, an fp32 image takes 0.3-0.5 s on either backend
#   and an int8 one under 0.1 s, when the emulation has a core to itself (on a loaded host, several times as long).
#
# Why each piece (details: the comments at each step):
# - a chroot, not Debian multiarch: python3:arm64 would replace the host's python3 (Multi-Arch: allowed);
# - binfmt_misc, not `qemu-aarch64 -L`: pip and venv start sys.executable as a subprocess;
# - a synthetic Cortex-A76 /proc/cpuinfo and /sys/devices/system/cpu: qemu shows the guest the host's x86
#   cpuinfo, and XNNPACK then refuses to start ("Failed to initialize, XNNPACK status: 0x5").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR=$(realpath -m "${1:-/var/tmp/adaptive-edge-arm}")
ROOTFS=$ENV_DIR/rootfs
WORK=/opt/arm-check  # inside the rootfs: bundles, images and run files, seen from both sides
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
WITH_ET=${WITH_ET:-1}
NICE_LEVEL=${NICE_LEVEL:-5}
QEMU_CPU=${QEMU_CPU:-cortex-a76}  # the Raspberry Pi 5's core; qemu's default "max" advertises SVE the cpuinfo lacks
DATA_ROOT=${DATA_ROOT:-$ROOT/../shared/data/cifar10}
OUT=${OUT:-$ROOT/benchmarks/results/arm}
IMAGES=${IMAGES:-1000}
ARM_IMAGES=${ARM_IMAGES:-$IMAGES}  # fewer on a busy machine: the first ARM_IMAGES of them run emulated
ET_ARM_IMAGES=${ET_ARM_IMAGES:-$ARM_IMAGES}
# The knobs that change what is checked, as set: the report's command line reproduces the run.
COMMAND="$(for knob in WITH_ET IMAGES ARM_IMAGES ET_ARM_IMAGES; do
    env | grep -q "^$knob=" && printf '%s=%s ' "$knob" "${!knob}"; done; true)scripts/arm_check.sh $*"
STARTED=$(date +%s)

log() { echo "[arm_check $(date +%H:%M:%S)] $*" >&2; }
nice_run() { nice -n "$NICE_LEVEL" "$@"; }

[ "$(id -u)" = 0 ] || { echo "arm_check: run as root (binfmt_misc, debootstrap and chroot need it)" >&2; exit 1; }
if [ ! -d "$DATA_ROOT/test" ]; then
    log "skipped: no CIFAR-10 test images at $DATA_ROOT/test (set DATA_ROOT)"
    exit 0
fi
mkdir -p "$ENV_DIR"
[ -f "$ENV_DIR/.rootfs-done" ] && FRESH=0 || FRESH=1

# A command inside the emulated system with a clean environment: the host's pip settings (constraints,
# find-links of x86 wheels, a CA path) must not leak in; PIP_CONFIG_FILE=/dev/null reads no config file there.
in_arm() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb \
        QEMU_CPU="$QEMU_CPU" PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        PIP_CACHE_DIR=/var/cache/pip PIP_ROOT_USER_ACTION=ignore \
        nice -n "$NICE_LEVEL" /usr/sbin/chroot "$ROOTFS" "$@"
}

# ---------------------------------------------------------------- 1. qemu-user-static and binfmt_misc
packages=(qemu-user-static binfmt-support debootstrap debian-archive-keyring ca-certificates)
if [ "$(dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null | grep -c 'install ok installed')" != "${#packages[@]}" ]; then
    log "installing ${packages[*]}"
    nice_run apt-get update -qq
    # --no-upgrade: installing must not upgrade what the machine already has (ca-certificates).
    DEBIAN_FRONTEND=noninteractive nice_run apt-get install -y -q --no-install-recommends --no-upgrade "${packages[@]}"
fi
# Without systemd nothing mounts binfmt_misc and the package cannot register its handler. Debian registers
# qemu-aarch64 with flag F (the kernel opens the interpreter now), so the chroot needs no copy of qemu.
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || update-binfmts --enable qemu-aarch64
grep -q 'flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { log "the qemu-aarch64 handler lacks flag F: copy /usr/bin/qemu-aarch64-static into $ROOTFS/usr/bin"; exit 1; }

# ---------------------------------------------------------------- 2. the arm64 root filesystem
# Stage 1 unpacks on the host; stage 2 runs the arm64 maintainer scripts under qemu (the slow part, ~5 min).
if [ ! -f "$ENV_DIR/.rootfs-done" ]; then
    if [ ! -f "$ENV_DIR/.stage1-done" ]; then
        log "debootstrap $SUITE arm64 into $ROOTFS (stage 1)"
        rm -rf "$ROOTFS"
        nice_run debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$ROOTFS" "$MIRROR" > "$ENV_DIR/debootstrap.log" 2>&1
        touch "$ENV_DIR/.stage1-done"
    fi
    log "debootstrap stage 2 (emulated)"
    nice_run /usr/sbin/chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >> "$ENV_DIR/debootstrap.log" 2>&1
    touch "$ENV_DIR/.rootfs-done"
fi

# ---------------------------------------------------------------- 3. what the emulated programs see
# The cpuinfo library (in onnxruntime, torch and XNNPACK) reads /proc/cpuinfo and /sys/devices/system/cpu.
# Mounting the host's /sys makes it parse x86 as ARM and crash; so: plain files, one Cortex-A76 per host core.
cores=$(nproc)
mkdir -p "$ROOTFS/etc/emulated" "$ROOTFS/sys/devices/system/cpu"
for i in $(seq 0 $((cores - 1))); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\n' "$i"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
    mkdir -p "$ROOTFS/sys/devices/system/cpu/cpu$i/regs/identification"
    echo 0x00000000414fd0b1 > "$ROOTFS/sys/devices/system/cpu/cpu$i/regs/identification/midr_el1"
done > "$ROOTFS/etc/emulated/cpuinfo"
for f in possible present online; do echo "0-$((cores - 1))" > "$ROOTFS/sys/devices/system/cpu/$f"; done
mounted=0
if ! mountpoint -q "$ROOTFS/proc"; then
    mount -t proc proc "$ROOTFS/proc"
    mount --bind "$ROOTFS/etc/emulated/cpuinfo" "$ROOTFS/proc/cpuinfo"
    mounted=1
fi
unmount() { if [ "$mounted" = 1 ]; then umount "$ROOTFS/proc/cpuinfo" "$ROOTFS/proc" || log "could not unmount $ROOTFS/proc"; fi; }
trap unmount EXIT
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# A CA the host trusts locally (a TLS-inspecting proxy) must be trusted inside too, or pip cannot verify PyPI.
changed=0
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] || continue
    cmp -s "$crt" "$ROOTFS/usr/local/share/ca-certificates/$(basename "$crt")" \
        || { cp "$crt" "$ROOTFS/usr/local/share/ca-certificates/"; changed=1; }
done
[ "$changed" = 0 ] || in_arm /usr/sbin/update-ca-certificates > /dev/null
[ "$(in_arm /usr/bin/python3 -c 'import platform; print(platform.machine())')" = aarch64 ] \
    || { log "the emulated python is not aarch64"; exit 1; }

# ---------------------------------------------------------------- 4. the device installs
source "$ROOT/scripts/venv.sh"  # the x86 side: the project's .venv (export extra), for the wheel and the bundles
# A copy of the sources, never a build in the checkout (pip would leave build/ and *.egg-info there).
rm -rf "$ROOTFS/opt/src.new" && mkdir -p "$ROOTFS/opt/src.new" "$ROOTFS/opt/check"
(cd "$ROOT" && cp -r pyproject.toml README.md devices.yaml runtime trainer exporter "$ROOTFS/opt/src.new/")
find "$ROOTFS/opt/src.new" -name __pycache__ -prune -exec rm -rf {} +
stamp=$(cd "$ROOTFS/opt/src.new" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
rm -rf "$ROOTFS/opt/src" "$ROOTFS/opt/wheel" "$ROOTFS/opt/wheel.new" && mv "$ROOTFS/opt/src.new" "$ROOTFS/opt/src"
cp "$ROOT/scripts/arm_compare.py" "$ROOTFS/opt/check/"
venvs=("venv-ort:device-onnxruntime:onnxruntime")
[ "$WITH_ET" = 1 ] && venvs+=("venv-et:device-executorch:executorch")
for entry in "${venvs[@]}"; do
    IFS=: read -r venv extra backend <<< "$entry"
    [ -x "$ROOTFS/opt/$venv/bin/python" ] || in_arm /usr/bin/python3 -m venv "/opt/$venv"
    if ! in_arm "/opt/$venv/bin/python" -c "import numpy, yaml, $backend" 2>/dev/null; then
        log "pip install \".[$extra]\" in /opt/$venv (emulated; the ExecuTorch one takes ~20 min)"
        in_arm "/opt/$venv/bin/pip" install -q "/opt/src[$extra]"
    elif [ "$(cat "$ROOTFS/opt/$venv/.project" 2>/dev/null)" != "$stamp" ]; then
        # The project is pure Python: its wheel is built here, and installed there without the network. Built
        # there, pip fetches setuptools for an isolated build, whose emulated TLS a busy host can slow until
        # PyPI resets the connection.
        log "the project's sources changed: reinstalling adaptive-edge alone in /opt/$venv, from a wheel built here"
        if [ ! -d "$ROOTFS/opt/wheel" ]; then
            mkdir -p "$ROOTFS/opt/wheel.new"
            nice_run "$ROOT/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
                -w "$ROOTFS/opt/wheel.new" "$ROOTFS/opt/src"
            mv "$ROOTFS/opt/wheel.new" "$ROOTFS/opt/wheel"
        fi
        wheel=$(basename "$ROOTFS"/opt/wheel/*.whl)  # the glob is the host's; the path is the emulated system's
        in_arm "/opt/$venv/bin/pip" install -q --no-deps --force-reinstall --no-index "/opt/wheel/$wheel"
    fi
    echo "$stamp" > "$ROOTFS/opt/$venv/.project"
done
# The onnxruntime device install must not pull torch (runtime/ never imports it).
in_arm /opt/venv-ort/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)' \
    || { log "torch is installed in the device-onnxruntime venv"; exit 1; }

# ---------------------------------------------------------------- 5. bundles, runs, the report
cd "$ROOT"
backends=(onnxruntime) targets=(onnx)
[ "$WITH_ET" = 1 ] && backends+=(executorch) targets+=(executorch)
nice_run python scripts/arm_compare.py prepare "$ROOTFS$WORK" --data-root "$DATA_ROOT" --images "$IMAGES" \
    --targets "${targets[@]}"
x86=() arm=()
for backend in "${backends[@]}"; do
    venv=$([ "$backend" = onnxruntime ] && echo venv-ort || echo venv-et)
    log "$backend on x86"
    PYTHONPATH="$ROOTFS/opt/src" nice_run python scripts/arm_compare.py run "$ROOTFS$WORK" --backend "$backend" --out "$ROOTFS$WORK/x86-$backend.npz" --margins
    log "$backend on emulated aarch64"
    in_arm "/opt/$venv/bin/python" /opt/check/arm_compare.py run "$WORK" --backend "$backend" --out "$WORK/arm-$backend.npz" \
        --limit "$([ "$backend" = executorch ] && echo "$ET_ARM_IMAGES" || echo "$ARM_IMAGES")"
    x86+=("$ROOTFS$WORK/x86-$backend.npz") arm+=("$ROOTFS$WORK/arm-$backend.npz")
done
if [ "$FRESH" = 1 ]; then
    where="The emulated environment was set up from scratch by this run ($(( ($(date +%s) - STARTED) / 60 )) min in all)."
else
    where="The emulated environment was reused: set up earlier ($(date -u -r "$ENV_DIR/.rootfs-done" '+%Y-%m-%d %H:%M UTC')), its project reinstalled from these sources."
fi
python scripts/arm_compare.py report "$ROOTFS$WORK" --x86 "${x86[@]}" --arm "${arm[@]}" --out "$OUT" \
    --command "$COMMAND" --note "$where" \
    --note "Emulation: qemu-user-static $(dpkg-query -W -f='${Version}' qemu-user-static), QEMU_CPU=$QEMU_CPU, Debian $SUITE arm64 rootfs."
