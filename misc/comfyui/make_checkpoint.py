"""Generate a random-weight checkpoint in the SD1.5 layout, for tests and the embedded demo.

ITS OUTPUTS ARE NOISE: the weights are random. It exists so that ComfyUI's real default text-to-image graph
(CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage) can
run end to end without downloading a model. ComfyUI detects it as SD1.5 (model_type EPS).

Runs in the embedded ComfyUI's own venv (it needs torch and ComfyUI's classes, which the worker never imports):
    .comfyui/venv/bin/python misc/comfyui/make_checkpoint.py --comfyui .comfyui/ComfyUI --out-dir DIR

Deterministic from --seed; cached by file name (variant + seed): a second call returns at once.
Prints the checkpoint's file name on its last line.
  --unet tiny  (default) one level, one res block, one transformer block: 25.8M parameters, ~0.04 s/step on a CPU
  --unet full  the real SD1.5 UNet shape (860M parameters): for GPU benchmarks
  --vae taesd  (default) the tiny autoencoder;  --vae full  SD's AutoencoderKL
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", required=True, type=Path, help="ComfyUI's source folder (has main.py)")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unet", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--vae", choices=["taesd", "full"], default="taesd")
    args = parser.parse_args()

    name = f"pyworker-noise-sd15-{args.unet}-{args.vae}-s{args.seed}.safetensors"
    out = args.out_dir / name
    if out.exists():
        print(name)
        return

    sys.path.insert(0, str(args.comfyui))
    import comfy.cli_args
    import safetensors.torch
    import torch

    comfy.cli_args.args.cpu = not torch.cuda.is_available()  # building tensors needs no device
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init  # no default init: every tensor is set below from the seed
    levels = {"tiny": 1, "full": 4}[args.unet]
    unet = UNetModel(
        image_size=32, in_channels=4, out_channels=4, model_channels=320,
        num_res_blocks=[1] if levels == 1 else [2] * 4,
        channel_mult=[1] if levels == 1 else [1, 2, 4, 4],
        transformer_depth=[1] if levels == 1 else [1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output=[1, 1] if levels == 1 else [1] * 9 + [0] * 3,
        transformer_depth_middle=1, use_spatial_transformer=True, legacy=False, context_dim=768,
        num_heads=8, use_linear_in_transformer=False, adm_in_channels=None, operations=ops,
    )
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    if args.vae == "taesd":
        vae: torch.nn.Module = comfy.taesd.taesd.TAESD()
    else:
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                    "dropout": 0.0}
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)

    generator = torch.Generator().manual_seed(args.seed)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("model.diffusion_model.", unet), ("cond_stage_model.", clip),
                           ("first_stage_model.", vae)):
        for key, value in sorted(module.state_dict().items()):
            if not value.is_floating_point():
                tensors[prefix + key] = value.clone()
                continue
            leaf = key.rsplit(".", 1)[-1]
            if value.dim() >= 2:
                fan_in = math.prod(value.shape[1:])
                t = torch.randn(value.shape, generator=generator) / math.sqrt(fan_in)
            elif leaf == "weight" or key.endswith("vae_scale"):
                t = torch.ones(value.shape)  # norm weights
            elif leaf == "bias" or key.endswith("vae_shift"):
                t = torch.zeros(value.shape)
            else:
                t = value.float().clone()
            tensors[prefix + key] = t.to(torch.float16).contiguous()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file(tensors, str(tmp), metadata={"pyworker": "random weights, outputs are noise"})
    tmp.rename(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, random weights: outputs are noise)", file=sys.stderr)
    print(name)


if __name__ == "__main__":
    main()
