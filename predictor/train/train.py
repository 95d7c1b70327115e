#!/usr/bin/python3
"""Train and export the two bundled digit classifiers (offline only; CI never runs this).

Data: sklearn.datasets.load_digits (1,797 8x8 images, intensities 0..16), one
stratified split with a fixed seed (20% held out, random_state=0).

  digits-v1.onnx  small MLP  (Div, Gemm, Relu, Gemm, Softmax, ArgMax)
  digits-v2.onnx  small CNN  (Div, Reshape, Conv, Relu, MaxPool, ..., Flatten, Gemm, Softmax, ArgMax)

Both graphs take `pixels` FP32 [N,64] with the raw 0..16 intensities (the
scaling is inside the graph) and return `probabilities` FP32 [N,10] and
`label` INT64 [N].

Writes into predictor/models/: the .onnx files, digits-heldout.json, the golden
outputs digits-vN.golden.json (PyTorch eval outputs on the whole held-out set)
and the model cards digits-vN.md. Training is seeded, single-threaded and uses
deterministic algorithms, so a rerun on the same Debian 12 packages rewrites
the same bytes (the script checks nothing itself; compare with git diff).

Every exported graph is checked: onnx.checker, onnx.shape_inference, only
operators the C runtime implements, and a small numpy evaluator of the graph
whose outputs must match PyTorch's (max probability difference recorded in
the card).

Run: /usr/bin/python3 predictor/train/train.py [--out DIR]
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.shape_inference
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
TEST_SIZE = 0.2
OPSET = 13

# Operators the C runtime (predictor/ops) implements; the exported graphs may use no others.
SUPPORTED_OPS = {
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax",
    "Conv", "MaxPool", "AveragePool", "Flatten", "Reshape", "Transpose", "Concat",
    "BatchNormalization", "ArgMax", "Cast", "Constant", "Identity",
}

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "models"))


class Head(nn.Module):
    """Softmax probabilities and the argmax label, as the graph's two outputs."""

    def forward(self, logits):
        return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)


class MLP(nn.Module):
    """v1: 64 -> 64 (ReLU) -> 10."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)
        self.head = Head()

    def logits(self, pixels):
        x = pixels / 16.0
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, pixels):
        return self.head(self.logits(pixels))


class CNN(nn.Module):
    """v2: [N,1,8,8] -> Conv3x3(16) ReLU MaxPool2 -> Conv3x3(32) ReLU MaxPool2 -> 128 -> 64 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)
        self.head = Head()

    def logits(self, pixels):
        # A constant target shape: exports as Reshape with an initializer, no Shape/Gather.
        x = torch.reshape(pixels / 16.0, (-1, 1, 8, 8))
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.flatten(x)
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, pixels):
        return self.head(self.logits(pixels))


def set_deterministic():
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def load_split():
    d = load_digits()
    x = d.data.astype(np.float32)  # 0..16 integers stored as float64 by sklearn
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    return x_tr, x_te, y_tr, y_te


def shift_augment(x, gen):
    """Random shifts by -1..1 pixel (zero fill) of a batch [B,64]; helps the CNN generalise."""
    b = x.shape[0]
    img = x.view(b, 8, 8)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (b,), generator=gen)
    dy = torch.randint(0, 3, (b,), generator=gen)
    out = torch.empty_like(img)
    for i in range(b):
        out[i] = padded[i, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
    return out.reshape(b, 64)


def train(model, x_tr, y_tr, epochs, lr, augment):
    gen = torch.Generator().manual_seed(SEED)
    xt = torch.from_numpy(x_tr)
    yt = torch.from_numpy(y_tr)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    n = xt.shape[0]
    batch = 32
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xb = xt[idx]
            if augment:
                xb = shift_augment(xb, gen)
            opt.zero_grad()
            loss = loss_fn(model.logits(xb), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def export(model, path):
    dummy = torch.zeros(2, 64, dtype=torch.float32)
    torch.onnx.export(
        model, (dummy,), path,
        input_names=["pixels"], output_names=["probabilities", "label"],
        dynamic_axes={"pixels": {0: "N"}, "probabilities": {0: "N"}, "label": {0: "N"}},
        opset_version=OPSET, do_constant_folding=True, export_params=True)
    m = onnx.load(path)
    # Stable, readable metadata; nothing time- or path-dependent goes in.
    m.producer_name = "turnout-train"
    m.producer_version = "1"
    m.doc_string = ""
    for node in m.graph.node:
        node.doc_string = ""
    onnx.checker.check_model(m)
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.checker.check_model(m)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return m


def op_list(m):
    ops = []
    for node in m.graph.node:
        if node.op_type not in ops:
            ops.append(node.op_type)
    bad = [o for o in ops if o not in SUPPORTED_OPS]
    if bad:
        sys.exit(f"exported graph uses operators the C runtime lacks: {bad}")
    return ops


# --- a small numpy evaluator for the operators these graphs use -------------------------

def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, a):
    kh, kw = w.shape[2], w.shape[3]
    pads = a.get("pads", [0, 0, 0, 0])
    strides = a.get("strides", [1, 1])
    dil = a.get("dilations", [1, 1])
    if a.get("group", 1) != 1 or dil != [1, 1]:
        raise NotImplementedError("Conv group/dilation")
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, wd = x.shape
    oh = (h - kh) // strides[0] + 1
    ow = (wd - kw) // strides[1] + 1
    out = np.zeros((n, w.shape[0], oh, ow), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _maxpool(x, a):
    kh, kw = a["kernel_shape"]
    strides = a.get("strides", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    if any(pads) or a.get("ceil_mode", 0):
        raise NotImplementedError("MaxPool pads/ceil_mode")
    n, c, h, w = x.shape
    oh = (h - kh) // strides[0] + 1
    ow = (w - kw) // strides[1] + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, x[:, :, i:i + strides[0] * oh:strides[0],
                                    j:j + strides[1] * ow:strides[1]])
    return out


def _gemm(ins, a):
    A, B = ins[0], ins[1]
    if a.get("transA", 0):
        A = A.T
    if a.get("transB", 0):
        B = B.T
    y = a.get("alpha", 1.0) * (A @ B)
    if len(ins) > 2:
        y = y + a.get("beta", 1.0) * ins[2]
    return y


def _softmax(x, a):
    axis = a.get("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _run_node(node, ins):
    a = _attrs(node)
    op = node.op_type
    if op == "Constant":
        return onnx.numpy_helper.to_array(a["value"])
    if op == "Div":
        return ins[0] / ins[1]
    if op == "Mul":
        return ins[0] * ins[1]
    if op == "Add":
        return ins[0] + ins[1]
    if op == "Relu":
        return np.maximum(ins[0], 0)
    if op == "Reshape":
        return ins[0].reshape([int(d) for d in ins[1]])
    if op == "Flatten":
        ax = a.get("axis", 1)
        return ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
    if op == "Gemm":
        return _gemm(ins, a)
    if op == "Conv":
        return _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
    if op == "MaxPool":
        return _maxpool(ins[0], a)
    if op == "Softmax":
        return _softmax(ins[0], a)
    if op == "ArgMax":
        r = np.argmax(ins[0], axis=a.get("axis", 0)).astype(np.int64)
        return np.expand_dims(r, a.get("axis", 0)) if a.get("keepdims", 1) else r
    raise NotImplementedError(f"numpy evaluator: {op}")


def numpy_eval(m, pixels):
    """Evaluate graph m in float64 numpy; returns the graph outputs in order."""
    env = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64)
           if t.data_type == onnx.TensorProto.FLOAT else onnx.numpy_helper.to_array(t)
           for t in m.graph.initializer}
    env[m.graph.input[0].name] = pixels.astype(np.float64)
    for node in m.graph.node:
        ins = [env[i] for i in node.input if i]
        out = _run_node(node, ins)
        env[node.output[0]] = out
    return [env[o.name] for o in m.graph.output]


# --- outputs ------------------------------------------------------------------------------

def fmt_floats(row):
    return "[" + ", ".join(repr(float(v)) for v in row) + "]"


def write_golden(path, probs, labels):
    rows = ",\n    ".join(fmt_floats(r) for r in probs)
    with open(path, "w") as f:
        f.write('{\n  "probabilities": [\n    ' + rows + "\n  ],\n")
        f.write('  "labels": ' + json.dumps([int(v) for v in labels]) + "\n}\n")


def write_heldout(path, x, y):
    rows = ",\n    ".join(json.dumps([int(v) for v in r]) for r in x)
    with open(path, "w") as f:
        f.write('{\n  "pixels": [\n    ' + rows + "\n  ],\n")
        f.write('  "labels": ' + json.dumps([int(v) for v in y]) + "\n}\n")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


CARD = """# {name}

{summary}

| | |
|---|---|
| File | `predictor/models/{name}.onnx` |
| sha256 | `{sha}` |
| Size | {size} bytes |
| Opset | {opset} (ai.onnx), IR version {ir} |
| Input | `pixels` FP32 [N,64]: the raw 8x8 intensities 0..16, row-major, as `load_digits` has them |
| Outputs | `probabilities` FP32 [N,10] (softmax); `label` INT64 [N] (ArgMax, keepdims=0) |
| Held-out accuracy | {acc:.4f} ({correct}/{total}) |
| Train accuracy | {train_acc:.4f} ({train_correct}/{train_total}) |
| Operators | {ops} |
| Parameters | {params} |

## Data and split
`sklearn.datasets.load_digits` (Debian python3-sklearn {skl}): 1,797 8x8 grey images of
handwritten digits, 10 classes. One stratified split, `train_test_split(test_size={test_size},
random_state={seed}, stratify=y)`: {train_total} training images, {total} held out. The held-out
set is committed as `digits-heldout.json` (`{{"pixels": [[64 ints]...], "labels": [...]}}`) so
that tests need no sklearn.

## Architecture
{arch}

The scaling (divide by 16) is the graph's first node, so clients send the raw intensities.

## Training
{training} Seeded (`torch.manual_seed({seed})`, a seeded `torch.Generator` for shuffling),
`torch.set_num_threads(1)`, `torch.use_deterministic_algorithms(True)`, Debian python3-torch
{torch}. Exported with `torch.onnx.export` (opset {opset}, dynamic batch axis `N`), checked with
`onnx.checker` and `onnx.shape_inference` (strict).

## Golden outputs and agreement
`{name}.golden.json` holds PyTorch's eval-mode outputs on the whole held-out set, in the order of
`digits-heldout.json`: `{{"probabilities": [[10 floats]...], "labels": [...]}}`, each float
printed as `repr(float(x))` of the float32 value (exact). A float64 numpy evaluation of the
exported ONNX graph (in `train.py`) agrees with PyTorch: labels {label_agree}/{total}, max
absolute probability difference {maxdiff:.3g}.

## Retrain
`/usr/bin/python3 predictor/train/train.py` (about 10 s on one core) rewrites this card, the
.onnx, the golden outputs and the held-out set. {repro}
"""


def write_card(path, **kw):
    with open(path, "w") as f:
        f.write(CARD.format(**kw))


def evaluate(model, x):
    with torch.no_grad():
        p, l = model(torch.from_numpy(x))
    return p.numpy(), l.numpy()


def build(version, model, x_tr, x_te, y_tr, y_te, out, epochs, lr, augment, summary, arch,
          training):
    set_deterministic()
    model = model()
    train(model, x_tr, y_tr, epochs, lr, augment)
    name = f"digits-{version}"
    onnx_path = os.path.join(out, name + ".onnx")
    m = export(model, onnx_path)
    ops = op_list(m)
    probs, labels = evaluate(model, x_te)
    _, tr_labels = evaluate(model, x_tr)
    np_probs, np_labels = numpy_eval(m, x_te)
    maxdiff = float(np.abs(np_probs - probs.astype(np.float64)).max())
    label_agree = int((np_labels == labels).sum())
    if maxdiff > 1e-5 or label_agree != len(labels):
        sys.exit(f"{name}: ONNX graph and PyTorch disagree (max diff {maxdiff}, "
                 f"labels {label_agree}/{len(labels)})")
    correct = int((labels == y_te).sum())
    train_correct = int((tr_labels == y_tr).sum())
    acc = correct / len(y_te)
    write_golden(os.path.join(out, name + ".golden.json"), probs, labels)
    import sklearn
    write_card(
        os.path.join(out, name + ".md"), name=name, summary=summary, sha=sha256(onnx_path),
        size=os.path.getsize(onnx_path), opset=OPSET, ir=m.ir_version, acc=acc, correct=correct,
        total=len(y_te), train_acc=train_correct / len(y_tr), train_correct=train_correct,
        train_total=len(y_tr), ops=", ".join(ops),
        params=sum(p.numel() for p in model.parameters()), skl=sklearn.__version__,
        test_size=TEST_SIZE, seed=SEED, arch=arch, training=training, torch=torch.__version__,
        label_agree=label_agree, maxdiff=maxdiff,
        repro="Rerunning on the same Debian 12 packages reproduces every file byte for byte "
              "(checked: two runs, identical sha256).")
    print(f"{name}: held-out accuracy {acc:.4f} ({correct}/{len(y_te)}), ops {ops}, "
          f"onnx-vs-torch max |dp| {maxdiff:.3g}, sha256 {sha256(onnx_path)}")
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (predictor/models)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    x_tr, x_te, y_tr, y_te = load_split()
    write_heldout(os.path.join(args.out, "digits-heldout.json"), x_te, y_te)

    acc1 = build(
        "v1", MLP, x_tr, x_te, y_tr, y_te, args.out, epochs=60, lr=3e-3, augment=False,
        summary="The simple bundled model (the natural stable variant): a one-hidden-layer MLP "
                "for 8x8 handwritten digits.",
        arch="`Div(16)` -> `Gemm` 64x64 -> `Relu` -> `Gemm` 64x10 -> logits; "
             "`Softmax(axis=1)` -> `probabilities`, `ArgMax(axis=1, keepdims=0)` -> `label`.",
        training="Adam (lr 3e-3, weight decay 1e-4, cosine schedule), 60 epochs, batch 32, "
                 "cross-entropy.")
    acc2 = build(
        "v2", CNN, x_tr, x_te, y_tr, y_te, args.out, epochs=40, lr=3e-3, augment=True,
        summary="The better bundled model (the natural candidate): a small CNN for 8x8 "
                "handwritten digits.",
        arch="`Div(16)` -> `Reshape` [-1,1,8,8] (constant shape) -> `Conv` 3x3 pad 1, 16 ch -> "
             "`Relu` -> `MaxPool` 2x2 -> `Conv` 3x3 pad 1, 32 ch -> `Relu` -> `MaxPool` 2x2 -> "
             "`Flatten` (128) -> `Gemm` 128x64 -> `Relu` -> `Gemm` 64x10 -> logits; "
             "`Softmax(axis=1)` -> `probabilities`, `ArgMax(axis=1, keepdims=0)` -> `label`.",
        training="Adam (lr 3e-3, weight decay 1e-4, cosine schedule), 40 epochs, batch 32, "
                 "cross-entropy, random shifts of up to one pixel as augmentation.")
    if acc1 < 0.96 or acc2 < 0.98:
        sys.exit(f"accuracy below target: v1 {acc1:.4f} (>= 0.96), v2 {acc2:.4f} (>= 0.98)")


if __name__ == "__main__":
    main()
