#!/usr/bin/env python3
"""Generate the benchmark set's converter-made models: MobileNetV2, LSTM, GRU, transformer.

These are the model families that TensorFlow's converter emits and that no PyPI wheel
ships in all of float / int8 / dynamic-range form. They are made here once, with the
TensorFlow and tf-keras versions pinned in requirements.txt beside this file, and the
resulting .tflite files are committed next to it (scripts/gen_models/tflite/) with
their sha256 pinned in scripts/fetch_models.py, which copies them into models/.
Nobody needs TensorFlow to build or test Switchyard; only to re-run this script.

Weights: Keras pretrained weights cannot be downloaded on the build machines, so every
model is randomly initialised with a fixed seed (tf_keras.utils.set_random_seed(SEED)),
and batch-norm statistics are drawn from the same seed so that activations are not all
alike. The models are not trained: they exercise the operators, shapes and quantization
parameters that real converted models have, not accuracy.

Quantization:
  _float     plain conversion
  _int8      full-integer post-training quantization (int8 inputs and outputs), the
             representative dataset being REP_SAMPLES fixed-seed random inputs
  _dynamic   dynamic-range quantization (converter.optimizations = [DEFAULT] and no
             representative dataset): int8 weights, float activations (hybrid kernels)

Run (in a venv with requirements.txt installed; takes ~2 minutes on 2 cores):
  TF_USE_LEGACY_KERAS=1 python scripts/gen_models/gen_models.py [--out DIR] [--only NAME ...]
Then update the sha256 pins in scripts/fetch_models.py (the script prints them).
"""
import argparse
import hashlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20260101
REP_SAMPLES = 32


def seeded():
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)


def randomise_batchnorm(model):
    """Random but plausible BN statistics, so the folded per-channel scales differ."""
    rs = np.random.RandomState(SEED)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape
            layer.set_weights([
                rs.uniform(0.5, 1.5, n).astype(np.float32),
                rs.uniform(-0.2, 0.2, n).astype(np.float32),
                rs.uniform(-0.2, 0.2, n).astype(np.float32),
                rs.uniform(0.5, 2.0, n).astype(np.float32),
            ])


def spread_logits(model, shape, lo, hi, std=3.0):
    """Scale the classifier so its logits have standard deviation `std` on the
    representative inputs. An untrained 1000-way softmax is nearly uniform (every
    probability ~1e-3, below one int8 step of 1/256), which would make the quantized
    model's output a constant; trained classifiers are peaky like this."""
    head = model.layers[-1]
    feats = keras.Model(model.inputs, head.input)
    rs = np.random.RandomState(SEED + 2)
    f = feats.predict(rs.uniform(lo, hi, (8,) + tuple(shape[1:])).astype(np.float32), verbose=0)
    kernel, bias = head.get_weights()
    logits = f @ kernel + bias
    k = std / max(float(np.std(logits)), 1e-6)
    head.set_weights([kernel * k, bias * k])


# --- the models -------------------------------------------------------------------------

def mobilenetv2():
    """MobileNetV2, width 0.35, 96x96 RGB input in [-1, 1], 1000 classes with softmax."""
    seeded()
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                       classes=1000)
    randomise_batchnorm(m)
    spread_logits(m, (1, 96, 96, 3), -1.0, 1.0)
    return m, [(1, 96, 96, 3)], (-1.0, 1.0)


def lstm():
    """A keyword-spotter-sized LSTM: 49 frames of 40 features, LSTM(64), Dense(12)."""
    seeded()
    x = keras.Input(shape=(49, 40), batch_size=1)
    h = keras.layers.LSTM(64, return_sequences=False, unroll=False)(x)
    y = keras.layers.Dense(12, activation="softmax")(h)
    return keras.Model(x, y), [(1, 49, 40)], (-1.0, 1.0)


def gru(unroll=False):
    """GRU(48) over 32 frames of 24 features and a Dense head; TFLite has no fused GRU,
    so the converter emits a WHILE loop of FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD
    (or, unrolled, those ops 32 times over)."""
    seeded()
    x = keras.Input(shape=(32, 24), batch_size=1)
    h = keras.layers.GRU(48, return_sequences=False, unroll=unroll)(x)
    y = keras.layers.Dense(8)(h)
    return keras.Model(x, y), [(1, 32, 24)], (-1.0, 1.0)


def transformer():
    """One pre-norm-free encoder block as converters see it: multi-head self-attention
    (4 heads of 16), residual, layer norm, a GELU feed-forward (64 -> 128 -> 64),
    residual, layer norm; 32 tokens of width 64."""
    seeded()
    x = keras.Input(shape=(32, 64), batch_size=1)
    a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=16)(x, x)
    h = keras.layers.LayerNormalization(epsilon=1e-5)(x + a)
    f = keras.layers.Dense(128, activation="gelu")(h)
    f = keras.layers.Dense(64)(f)
    y = keras.layers.LayerNormalization(epsilon=1e-5)(h + f)
    return keras.Model(x, y), [(1, 32, 64)], (-1.0, 1.0)


# name stem -> (builder, variants)
FAMILIES = {
    "gen_mobilenetv2_035_96": (mobilenetv2, ["float", "int8", "dynamic"]),
    # No int16x8 LSTM: TF 2.21's converter refuses it ("Quantization to 16x8-bit not yet
    # supported for op: 'UNIDIRECTIONAL_SEQUENCE_LSTM'"), and LiteRT 2.3.0's built-in
    # kernel refuses int16 activations too (its single-op probe case in
    # docs/coverage/litert_builtin.json): only the int8 (8x8->16) integer path exists.
    "gen_lstm": (lstm, ["float", "int8", "dynamic"]),
    "gen_gru": (gru, ["float"]),
    # TF 2.21's calibrator crashes (SIGSEGV in libpywrap_tflite_common) quantizing the
    # GRU's WHILE loop to int8, so the int8 GRU is the same network (same seed, same
    # weights) unrolled over its 32 steps.
    "gen_gru_unrolled": (lambda: gru(unroll=True), ["int8"]),
    "gen_transformer": (transformer, ["float", "int8"]),
}


# --- conversion -------------------------------------------------------------------------

def representative(shapes, lo, hi):
    def gen():
        rs = np.random.RandomState(SEED + 1)
        for _ in range(REP_SAMPLES):
            yield [rs.uniform(lo, hi, s).astype(np.float32) for s in shapes]
    return gen


def convert(model, shapes, rng, variant):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float":
        pass
    elif variant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative(shapes, *rng)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    else:
        raise ValueError(variant)
    return conv.convert()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "tflite"))
    ap.add_argument("--only", nargs="*", help="family stems to make (default: all)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print(f"gen_models: tensorflow {tf.__version__}, tf_keras {keras.__version__}, seed {SEED}")
    for stem, (build, variants) in FAMILIES.items():
        if a.only and stem not in a.only:
            continue
        for v in variants:
            model, shapes, rng = build()
            data = convert(model, shapes, rng, v)
            name = f"{stem}_{v}.tflite"
            with open(os.path.join(a.out, name), "wb") as fh:
                fh.write(data)
            print(f'    "{name}": "{hashlib.sha256(data).hexdigest()}",  # {len(data)} bytes',
                  flush=True)


if __name__ == "__main__":
    main()
