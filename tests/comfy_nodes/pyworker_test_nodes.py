"""Custom nodes loaded into the test ComfyUI (copied into its base directory's custom_nodes/).

They run inside ComfyUI's own process and venv. Each takes a ``seed`` so a test can make a prompt unique and
keep ComfyUI's cache from serving it.
"""

import os
import struct
import time
import wave
import zlib

import comfy.utils
import folder_paths


class PyworkerSteps:
    """Reports ``steps`` progress events through ComfyUI's ProgressBar, sleeping ``step_seconds`` per step."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "steps": ("INT", {"default": 10, "min": 1, "max": 100000}),
            "step_seconds": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 60.0, "step": 0.0001}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1}),
        }}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "pyworker_test"

    def run(self, steps, step_seconds, seed):
        bar = comfy.utils.ProgressBar(steps)
        deadline = time.perf_counter()
        for _ in range(steps):
            deadline += step_seconds
            pause = deadline - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            bar.update(1)  # also where an interrupt takes effect
        text = f"{steps} steps, seed {seed}"
        return {"ui": {"text": [text]}, "result": (text,)}


class PyworkerRaise:
    """Raises ``ValueError(message)``: a runtime error in a workflow."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "message": ("STRING", {"default": "boom"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1}),
        }}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "pyworker_test"

    def run(self, message, seed):
        raise ValueError(message)


def _png(width, height, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class PyworkerOutputs:
    """Writes outputs of several kinds: a PNG image in a subfolder, a GIF, a WAV, a binary file of
    ``file_mb`` MB, a text, and a temp preview (which is not an output)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1}),
            "file_mb": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 4096.0, "step": 0.01}),
            "work_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.001}),
        }, "optional": {"after": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "pyworker_test"

    def run(self, seed, file_mb, work_seconds, after=None):
        if work_seconds:
            time.sleep(work_seconds)
        out = folder_paths.get_output_directory()
        temp = folder_paths.get_temp_directory()
        sub = "pyworker_test"
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        os.makedirs(temp, exist_ok=True)
        stem = f"pw_{seed}_{time.time_ns()}"
        with open(os.path.join(out, sub, stem + ".png"), "wb") as f:
            f.write(_png(8, 8, (seed % 256, 80, 160)))
        with open(os.path.join(out, stem + ".gif"), "wb") as f:
            f.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
        with wave.open(os.path.join(out, stem + ".wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x00\x00" * 800)
        with open(os.path.join(out, stem + ".bin"), "wb") as f:
            f.write(os.urandom(int(file_mb * 1024 * 1024)))
        with open(os.path.join(temp, stem + "_preview.png"), "wb") as f:
            f.write(_png(2, 2, (0, 0, 0)))
        return {"ui": {
            "images": [{"filename": stem + ".png", "subfolder": sub, "type": "output"},
                       {"filename": stem + "_preview.png", "subfolder": "", "type": "temp"}],
            "gifs": [{"filename": stem + ".gif", "subfolder": "", "type": "output", "format": "image/gif"}],
            "audio": [{"filename": stem + ".wav", "subfolder": "", "type": "output"}],
            "files": [{"filename": stem + ".bin", "subfolder": "", "type": "output"}],
            "text": [f"outputs for seed {seed}"],
        }}


NODE_CLASS_MAPPINGS = {
    "PyworkerSteps": PyworkerSteps,
    "PyworkerRaise": PyworkerRaise,
    "PyworkerOutputs": PyworkerOutputs,
}
