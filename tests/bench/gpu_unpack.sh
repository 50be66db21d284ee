# Sourced on the GPU machine (tests/bench/gpu_carry.py writes it into the carry folder as unpack.sh) after
# every part was copied to $GPU_PARTS: joins and checks them, unpacks once, installs the wheels into $GPU_SITE
# and puts it first on PYTHONPATH, so that onnxruntime-gpu and the project's pins come before the image's own.
# GPU_PARTS / GPU_SITE default to /tmp/gpu-parts and /tmp/gpu-site; GPU_PROBE=0 skips the closing CUDA probe.
here=$(dirname "${BASH_SOURCE[0]}")
parts=${GPU_PARTS:-/tmp/gpu-parts}
site=${GPU_SITE:-/tmp/gpu-site}
if [ ! -f "$site/.unpacked" ]; then
  work=$(mktemp -d)
  cat "$parts"/part.* > "$work/all.tar.xz"
  if [ "$(sha256sum "$work/all.tar.xz" | cut -d' ' -f1)" != "$(cat "$here/sha256")" ]; then
    echo "carried parts incomplete or corrupt: $(ls "$parts")" >&2
    rm -rf "$work"
    return 1
  fi
  tar -xJf "$work/all.tar.xz" -C "$work" && rm "$work/all.tar.xz"
  mkdir -p "$site"
  if [ -d "$work/site" ]; then cp -a "$work/site/." "$site/"; fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$work"/whl/*.whl || { rm -rf "$work"; return 1; }
  rm -rf "$work"
  touch "$site/.unpacked"
fi
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
export PATH=$site/bin:$PATH
export PYTHONUNBUFFERED=1
if [ "${GPU_PROBE:-1}" != 0 ]; then
  python3 -c "import torch, onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers(), 'torch', torch.__version__, torch.cuda.get_device_name())"
fi
