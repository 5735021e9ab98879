#!/usr/bin/env bash
# The cross-platform proof's aarch64 row: a Debian arm64 root run under qemu-user-static, with this repository's
# Python packages at the versions this repository's venv has, and a launcher for tools/crossplatform.py.
#
#   sudo tools/aarch64_root.sh [ROOT]          (ROOT defaults to /srv/arm64; run again after a reboot: it only
#                                               redoes the mounts and the launcher then)
#   python tools/crossplatform.py --rows "" --launcher aarch64=ROOT.python --out FILE
#
# Needs an x86-64 Debian or Ubuntu host, root, and the Debian and PyPI mirrors. Emulation costs 40-80x: the 64 KiB text
# of the proof takes hours. The repository and /tmp (where crossplatform.py works) are bind-mounted at the same paths
# inside, and the host's model cache at /models, so the models crossplatform.py provides are found there too.
set -euo pipefail

ROOT=${1:-/srv/arm64}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# what `python -m lzarchive extract` imports, pinned to the host's versions (a proof compares like with like)
PACKAGES="torch numpy numba blake3 msgpack zstandard typer rich platformdirs safetensors tokenizers"

DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap binfmt-support >/dev/null
# containers often leave binfmt_misc unmounted; qemu-aarch64 must be registered with the F flag (the interpreter
# opened on the host), which Debian's qemu-user-static does
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64

if [ ! -x "$ROOT/opt/venv/bin/python" ]; then
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$ROOT"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"  # the host's trust, a proxy's CA included
    chroot "$ROOT" python3 -m venv /opt/venv
    pins=$("$PYTHON" -c "import importlib.metadata as m, sys
print(' '.join(f'{p}=={m.version(p).split(\"+\")[0]}' for p in sys.argv[1:]))" $PACKAGES)
    chroot "$ROOT" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install -q $pins
fi

MODELS=$("$PYTHON" -c "from lzarchive.engine import registry; print(registry.cache_dir())")
# not /sys: torch's cpuinfo crashes under qemu reading the host's x86 sysfs (without it, it only warns)
for path in /proc /dev /tmp "$REPO" "$MODELS"; do
    inside="$ROOT$path"
    [ "$path" = "$MODELS" ] && inside="$ROOT/models"
    mkdir -p "$inside"
    mountpoint -q "$inside" || mount --bind "$path" "$inside"
done

cat >"$ROOT.python" <<EOF
#!/bin/sh
exec chroot $ROOT env -i PATH=/usr/bin:/bin HOME=/root PYTHONPATH=$REPO LZA_MODEL_DIR=/models /opt/venv/bin/python "\$@"
EOF
chmod +x "$ROOT.python"
"$ROOT.python" -c "import platform, torch, numba, numpy
print(platform.machine(), 'python', platform.python_version(), 'torch', torch.__version__, 'numba', numba.__version__,
      'numpy', numpy.__version__)" 2>/dev/null
echo "launcher: --launcher aarch64=$ROOT.python"
