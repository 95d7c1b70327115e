"""flask_server.py - the "textbook" Flask + PyTorch model server, a benchmark peer.

This is how a model is commonly put behind HTTP in a tutorial: a Flask app whose
view parses the JSON, builds a torch tensor, runs the model in eager PyTorch
under torch.no_grad(), and returns JSON. It speaks just enough of the KServe V2
protocol for the benchmark (POST /v2/models/NAME/infer, GET /v2/health/ready),
so wrk sends it exactly the request it sends turnout-predictor.

The model: the ONNX file's weights (its initializers) are converted into torch
tensors and the graph's nodes are executed with torch.nn.functional ops, node
by node, in eager mode (a torch.nn.Module whose forward walks the graph). That
gives the same architecture and the same weights as the .onnx that
turnout-predictor serves, whatever layers predictor/train/train.py chose,
without depending on the training script's module layout. An operator not in
OPS below is refused at load time with its name.

Workers: --workers N pre-forks N processes that share one listening socket, each
running Werkzeug's (Flask's own) WSGI server single-threaded, like gunicorn's
sync workers (-w N); torch uses one intra-op thread per process. Single-threaded
Werkzeug speaks HTTP/1.0 and closes the connection after each answer, as
gunicorn's sync workers do.

Usage: python3 flask_server.py --model FILE --name NAME --listen 127.0.0.1:PORT
       [--workers N]. SIGTERM stops every worker; the exit status is 0.
"""

import argparse
import os
import signal
import socket
import sys

# Importing torch takes seconds; a SIGTERM during it must still exit 0.
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

ONNX_TO_TORCH = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}
V2_TYPE = {torch.float32: "FP32", torch.int64: "INT64", torch.int32: "INT32",
           torch.float64: "FP64", torch.bool: "BOOL"}


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads2d(a):
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise ValueError(f"asymmetric pads {pads} are not supported")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("auto_pad is not supported")
    return pads[:2]


def op_conv(a, x, w, b=None):
    return F.conv2d(x, w, b, stride=a.get("strides", [1, 1]), padding=_pads2d(a),
                    dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))


def op_maxpool(a, x):
    return F.max_pool2d(x, a["kernel_shape"], stride=a.get("strides", a["kernel_shape"]),
                        padding=_pads2d(a), dilation=a.get("dilations", [1, 1]),
                        ceil_mode=bool(a.get("ceil_mode", 0)))


def op_avgpool(a, x):
    return F.avg_pool2d(x, a["kernel_shape"], stride=a.get("strides", a["kernel_shape"]),
                        padding=_pads2d(a), ceil_mode=bool(a.get("ceil_mode", 0)),
                        count_include_pad=bool(a.get("count_include_pad", 0)))


def op_gemm(a, x, w, c=None):
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = a.get("alpha", 1.0) * (x @ w)
    if c is not None:
        y = y + a.get("beta", 1.0) * c
    return y


def op_flatten(a, x):
    axis = a.get("axis", 1)
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return x.reshape(lead, -1)


def op_reshape(a, x, shape):
    dims = [x.shape[i] if d == 0 and not a.get("allowzero", 0) else int(d)
            for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def op_argmax(a, x):
    return torch.argmax(x, dim=a.get("axis", 0), keepdim=bool(a.get("keepdims", 1)))


def op_unsqueeze(a, x, axes=None):
    axes = axes.tolist() if axes is not None else a["axes"]
    for ax in sorted(axes):
        x = x.unsqueeze(ax)
    return x


def op_squeeze(a, x, axes=None):
    axes = axes.tolist() if axes is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted(axes, reverse=True):
        x = x.squeeze(ax)
    return x


OPS = {
    "Conv": op_conv,
    "MaxPool": op_maxpool,
    "AveragePool": op_avgpool,
    "Gemm": op_gemm,
    "MatMul": lambda a, x, y: x @ y,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: x / y,
    "Relu": lambda a, x: F.relu(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "Tanh": lambda a, x: torch.tanh(x),
    "Softmax": lambda a, x: F.softmax(x, dim=a.get("axis", -1)),
    "Flatten": op_flatten,
    "Reshape": op_reshape,
    "Transpose": lambda a, x: x.permute(*a["perm"]) if "perm" in a else x.t(),
    "ArgMax": op_argmax,
    "Cast": lambda a, x: x.to(ONNX_TO_TORCH[a["to"]]),
    "Constant": lambda a: torch.from_numpy(numpy_helper.to_array(a["value"]).copy()),
    "Identity": lambda a, x: x,
    "Unsqueeze": op_unsqueeze,
    "Squeeze": op_squeeze,
    "Clip": lambda a, x, lo=None, hi=None: torch.clamp(x, lo, hi),
}


class OnnxAsTorch(torch.nn.Module):
    """The ONNX graph's weights as torch tensors, run node by node in eager PyTorch."""

    def __init__(self, path):
        super().__init__()
        model = onnx.load(path)
        g = model.graph
        self.weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
                        for i in g.initializer}
        self.nodes = []
        for n in g.node:
            if n.op_type not in OPS:
                raise ValueError(f"{path}: node {n.name!r}: operator {n.op_type} not supported")
            self.nodes.append((OPS[n.op_type], _attrs(n), list(n.input), list(n.output)))
        self.inputs = [i.name for i in g.input if i.name not in self.weights]
        self.outputs = [o.name for o in g.output]

    def forward(self, feeds):
        env = dict(self.weights)
        env.update(feeds)
        for fn, attrs, ins, outs in self.nodes:
            y = fn(attrs, *[env[i] if i else None for i in ins])
            env[outs[0]] = y
        return {name: env[name] for name in self.outputs}


def make_app(model, name):
    app = Flask(__name__)

    @app.get("/v2/health/ready")
    def ready():
        return jsonify({"ready": True})

    @app.post("/v2/models/<model_name>/infer")
    def infer(model_name):
        if model_name != name:
            return jsonify({"error": f"unknown model {model_name!r}"}), 404
        req = request.get_json()
        inp = req["inputs"][0]
        x = torch.tensor(inp["data"], dtype=torch.float32).reshape(inp["shape"])
        with torch.no_grad():
            outs = model({model.inputs[0]: x})
        resp = {"model_name": name, "outputs": [
            {"name": k, "shape": list(v.shape), "datatype": V2_TYPE[v.dtype],
             "data": v.flatten().tolist()} for k, v in outs.items()]}
        if "id" in req:
            resp["id"] = req["id"]
        return jsonify(resp)

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    if not 1 <= args.workers <= 64:
        sys.exit("flask_server.py: --workers must be 1..64")

    torch.set_num_threads(1)
    model = OnnxAsTorch(args.model).eval()
    app = make_app(model, args.name)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    sock.set_inheritable(True)

    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
            srv = make_server(host, int(port), app, threaded=False, fd=sock.fileno())
            srv.serve_forever()
            os._exit(0)
        children.append(pid)

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # already reaped by the wait loop below
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            return 1
        sys.stderr.write(f"flask_server.py: worker {pid} exited\n")
        stop(None, None)


if __name__ == "__main__":
    sys.exit(main())
