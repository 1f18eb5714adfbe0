"""Helpers to export early-exit models in the exitrt model format (models/FORMAT.md).

This module is deliberately small and dependency-light (torch + the standard library):

- ``write_safetensors`` / ``read_safetensors``: a hand-written safetensors writer and
  reader (no ``safetensors`` package).  Layout: little-endian u64 N, N bytes of JSON
  header padded with spaces so that N is a multiple of 8, then the raw little-endian
  tensor data.  Tensors are stored sorted by name, contiguously, offsets relative to the
  start of the data area.
- ``ModelBuilder`` and the ``op_*`` helpers: build the ``config.json`` dictionary of
  FORMAT.md together with the tensors it names.
- ``validate``: checks a (config, tensors) pair against the rules of FORMAT.md (widths,
  names, shapes, no unnamed tensors), as the C loader is expected to.
- ``forward_exits``: a pure-torch reference forward pass that implements exactly the
  FORMAT.md semantics and returns the logits of every exit.  Convolutional ops
  (conv2d, relu, maxpool, avgpool, global_avgpool on ``[C, H, W]`` samples, NCHW) follow
  PyTorch: ``F.conv2d`` (stride/padding/dilation/groups, zero padding), ``F.max_pool2d``
  (implicit -inf padding), ``F.avg_pool2d(count_include_pad=True)``, floor mode.
- ``model_flops`` / ``model_other_flops``: per-exit FLOPs of conv2d + linear (shape
  tracked through the ops) and a rough count of everything else.
- ``dump_json``: JSON writer that prints floats with 9 significant digits.
"""

import json
import math
import os
import struct
from pathlib import Path

import torch
import torch.nn.functional as F

FORMAT_NAME = "exitrt-model"
FORMAT_VERSION = 1

_DTYPES = {
    # name: (torch dtype used for rounding, element size)
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
}


# --------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------

def _tensor_bytes(t, dtype):
    """Raw little-endian bytes of tensor ``t`` rounded to ``dtype`` ("F32"/"F16"/"BF16")."""
    tdtype, _ = _DTYPES[dtype]
    t = t.detach().to("cpu").contiguous()
    # Round from float32 (round-to-nearest-even), as torch does for .to(half/bfloat16).
    t = t.to(torch.float32).to(tdtype).contiguous()
    if dtype == "F32":
        arr = t.numpy().astype("<f4")
    else:
        # numpy has no bfloat16: reinterpret the 16-bit patterns.
        arr = t.view(torch.int16).numpy().astype("<i2")
    return arr.tobytes(order="C")


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """Write ``tensors`` (dict name -> torch.Tensor) to ``path`` in safetensors format.

    Every tensor is converted to ``dtype`` ("F32", "F16" or "BF16").  The header lists
    the tensors sorted by name; their data follows contiguously in the same order.  The
    JSON header is padded with spaces to a multiple of 8 bytes.  ``metadata`` (dict of
    str -> str) becomes ``__metadata__`` when given.
    """
    if dtype not in _DTYPES:
        raise ValueError("dtype must be one of %s" % sorted(_DTYPES))
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("tensor name __metadata__ is reserved")
        t = tensors[name]
        data = _tensor_bytes(t, dtype)
        header[name] = {
            "dtype": dtype,
            "shape": [int(s) for s in t.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


def read_safetensors(path, upcast=True):
    """Read a safetensors file written by anyone (hand-written parser).

    Returns ``(tensors, dtypes, metadata)``: tensors as torch tensors (upcast to float32
    when ``upcast``), the stored dtype string per tensor, and the ``__metadata__`` dict.
    Validates offsets and sizes like the C loader should.
    """
    import numpy as np

    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise ValueError("%s: too short" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError("%s: header length %d past end of file" % (path, n))
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors, dtypes = {}, {}
    spans = []
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise ValueError("%s: unsupported dtype %s" % (name, dt))
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(v) for v in info["data_offsets"])
        size = _DTYPES[dt][1]
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= begin <= end <= len(data)) or end - begin != numel * size:
            raise ValueError("%s: bad data_offsets %s for shape %s %s" % (name, (begin, end), shape, dt))
        spans.append((begin, end, name))
        buf = data[begin:end]
        if dt == "F32":
            t = torch.from_numpy(np.frombuffer(buf, dtype="<f4").astype(np.float32).reshape(shape))
        elif dt == "F16":
            t = torch.from_numpy(np.frombuffer(buf, dtype="<f2").astype(np.float16).reshape(shape))
        else:  # BF16: upper 16 bits of an IEEE float32
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(bits.view(np.float32).reshape(shape).copy())
            if not upcast:
                t = t.to(torch.bfloat16)
        if upcast:
            t = t.to(torch.float32)
        tensors[name] = t
        dtypes[name] = dt
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError("tensors %s and %s overlap" % (n0, n1))
    return tensors, dtypes, metadata


# --------------------------------------------------------------------------------------
# config building
# --------------------------------------------------------------------------------------

def _cfg_float(v):
    """``v`` rounded to float32, returned as the shortest decimal that reads back as that
    float32 (so config.json shows 0.4, not 0.400000006)."""
    import numpy as np
    return float(repr(np.float32(float(v))))


class ModelBuilder:
    """Collects stages, exits and tensors; produces config.json + model.safetensors.

    Example::

        b = ModelBuilder("tiny", input_shape=[24], classes=["a", "b"])
        b.add_stage("stage0",
                    [b.flatten(), b.linear("stages.0.fc", W, bias, "relu")],
                    exit=[b.linear("exits.0.fc", We, be)])
        b.save("models/tiny", dtype="F32")
    """

    def __init__(self, name, input_shape, classes, mean=None, std=None, layout=None):
        self.name = name
        self.layout = layout  # None: key omitted; "NCHW" (FORMAT.md, conv models)
        self.input_shape = [int(s) for s in input_shape]
        self.classes = list(classes)
        self.mean = None if mean is None else [_cfg_float(v) for v in mean]
        self.std = None if std is None else [_cfg_float(v) for v in std]
        self.stages = []
        self.tensors = {}

    def _add_tensor(self, name, t):
        if name in self.tensors:
            raise ValueError("duplicate tensor name %s" % name)
        self.tensors[name] = t.detach().to("cpu", torch.float32).contiguous()
        return name

    # op helpers --------------------------------------------------------------------
    @staticmethod
    def flatten():
        return {"op": "flatten"}

    def linear(self, prefix, weight, bias=None, activation="none"):
        """Linear op; tensors are registered as ``prefix.weight`` / ``prefix.bias``."""
        out_f, in_f = weight.shape
        op = {"op": "linear", "in": int(in_f), "out": int(out_f)}
        if activation is not None:  # None: key omitted (FORMAT.md default "none")
            op["activation"] = activation
        op["weight"] = self._add_tensor(prefix + ".weight", weight)
        if bias is not None:
            op["bias"] = self._add_tensor(prefix + ".bias", bias)
        return op

    def layernorm(self, prefix, weight=None, bias=None, eps=1e-5, dim=None):
        if dim is None:
            dim = int(weight.shape[0])
        op = {"op": "layernorm", "dim": int(dim)}
        if eps is not None:  # None: key omitted (FORMAT.md default 1e-5)
            op["eps"] = float(eps)
        if weight is not None:
            op["weight"] = self._add_tensor(prefix + ".weight", weight)
        if bias is not None:
            op["bias"] = self._add_tensor(prefix + ".bias", bias)
        return op

    @staticmethod
    def residual(ops):
        return {"op": "residual", "ops": list(ops)}

    def conv2d(self, prefix, weight, bias=None, stride=None, padding=None, dilation=None,
               groups=None, activation="none", kernel_as_int=False):
        """conv2d op; ``weight`` is ``[K, C/g, kh, kw]``.  ``stride``/``padding``/
        ``dilation``/``groups``/``activation`` set to None are omitted from the config
        (FORMAT.md defaults 1, 0, 1, 1, none); ints stay single numbers, pairs become
        lists.  ``kernel_as_int`` writes a square kernel as a single number."""
        k_out, c_per_g, kh, kw = (int(v) for v in weight.shape)
        g = 1 if groups is None else int(groups)
        op = {"op": "conv2d", "in_channels": c_per_g * g, "out_channels": k_out,
              "kernel": kh if (kernel_as_int and kh == kw) else [kh, kw]}
        for key, v in (("stride", stride), ("padding", padding), ("dilation", dilation)):
            if v is not None:
                op[key] = int(v) if isinstance(v, int) else [int(a) for a in v]
        if groups is not None:
            op["groups"] = g
        if activation is not None:
            op["activation"] = activation
        op["weight"] = self._add_tensor(prefix + ".weight", weight)
        if bias is not None:
            op["bias"] = self._add_tensor(prefix + ".bias", bias)
        return op

    @staticmethod
    def relu():
        return {"op": "relu"}

    @staticmethod
    def _pool(kind, kernel, stride=None, padding=None):
        op = {"op": kind}
        for key, v in (("kernel", kernel), ("stride", stride), ("padding", padding)):
            if v is not None:
                op[key] = int(v) if isinstance(v, int) else [int(a) for a in v]
        return op

    @staticmethod
    def maxpool(kernel, stride=None, padding=None):
        return ModelBuilder._pool("maxpool", kernel, stride, padding)

    @staticmethod
    def avgpool(kernel, stride=None, padding=None):
        return ModelBuilder._pool("avgpool", kernel, stride, padding)

    @staticmethod
    def global_avgpool():
        return {"op": "global_avgpool"}

    def add_stage(self, name, ops, exit=None):
        st = {"name": name, "ops": list(ops)}
        if exit is not None:
            st["exit"] = list(exit)
        self.stages.append(st)
        return st

    # output ------------------------------------------------------------------------
    def config(self):
        inp = {"shape": list(self.input_shape)}
        if self.mean is not None:
            inp["mean"] = list(self.mean)
        if self.std is not None:
            inp["std"] = list(self.std)
        cfg = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
        }
        if self.layout is not None:
            cfg["layout"] = self.layout
        cfg.update({
            "input": inp,
            "classes": list(self.classes),
            "stages": self.stages,
        })
        return cfg

    def desc(self):
        return {"config": self.config(), "tensors": dict(self.tensors)}

    def save(self, directory, dtype="F32", metadata=None):
        """Write ``directory/config.json`` and ``directory/model.safetensors``."""
        cfg = self.config()
        validate(cfg, self.tensors)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w") as f:
            f.write(config_to_json(cfg))
        md = {"format": "pt", "exitrt_model": self.name}
        if metadata:
            md.update(metadata)
        write_safetensors(os.path.join(directory, "model.safetensors"), self.tensors, dtype, md)


def config_to_json(cfg):
    """config.json text: indented, but every op on a single line for readability."""
    def op_line(op):
        return json.dumps(op, separators=(", ", ": "))

    lines = ["{"]
    top = [
        '  "format": %s' % json.dumps(cfg["format"]),
        '  "version": %d' % cfg["version"],
        '  "name": %s' % json.dumps(cfg["name"]),
    ]
    if "layout" in cfg:
        top.append('  "layout": %s' % json.dumps(cfg["layout"]))
    top += [
        '  "input": %s' % json.dumps(cfg["input"]),
        '  "classes": %s' % json.dumps(cfg["classes"]),
    ]
    stages = []
    for st in cfg["stages"]:
        s = ['    {"name": %s,' % json.dumps(st["name"])]
        s.append('     "ops": [\n' + ",\n".join("       " + op_line(o) for o in st["ops"]) + "]"
                 + ("," if "exit" in st else ""))
        if "exit" in st:
            s.append('     "exit": [\n' + ",\n".join("       " + op_line(o) for o in st["exit"]) + "]")
        stages.append("\n".join(s) + "}")
    top.append('  "stages": [\n' + ",\n".join(stages) + "\n  ]")
    lines.append(",\n".join(top))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(cfg))
    return text


def load_model(directory, upcast=True):
    """Load ``(config, tensors, dtypes)`` from a model directory."""
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    tensors, dtypes, _ = read_safetensors(os.path.join(directory, "model.safetensors"), upcast)
    validate(cfg, tensors)
    return cfg, tensors, dtypes


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------

def _numel(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


_CONV_OPS = ("conv2d", "maxpool", "avgpool", "global_avgpool")


def _pair(op, key, default, minimum):
    """FORMAT.md pair field: absent (``default``; None = required), a single integer
    (both axes) or a list of two integers, each >= ``minimum``.  Returns a tuple."""
    v = op.get(key)
    if v is None:
        if default is None:
            raise ValueError("%s.%s is required" % (op.get("op"), key))
        return tuple(default)
    vals = list(v) if isinstance(v, (list, tuple)) else [v, v]
    if len(vals) != 2 or any(isinstance(a, bool) or not isinstance(a, int) for a in vals):
        raise ValueError("%s.%s must be an integer or a list of two integers" % (op.get("op"), key))
    if any(a < minimum for a in vals):
        raise ValueError("%s.%s must be >= %d" % (op.get("op"), key, minimum))
    return tuple(vals)


def conv_geometry(op, shape):
    """Geometry of a conv2d / maxpool / avgpool / global_avgpool op on a ``[C, H, W]``
    sample: a dict with kernel, stride, padding, dilation (pairs), groups and
    ``out_shape``.  Raises ValueError on anything FORMAT.md (or PyTorch) rejects."""
    kind = op["op"]
    if len(shape) != 3:
        raise ValueError("%s needs a [C, H, W] sample, got shape %s" % (kind, list(shape)))
    c, h, w = (int(v) for v in shape)
    if kind == "global_avgpool":
        return {"kernel": (h, w), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
                "groups": 1, "out_shape": [c, 1, 1]}
    kernel = _pair(op, "kernel", None, 1)
    if kind == "conv2d":
        stride = _pair(op, "stride", (1, 1), 1)
        dilation = _pair(op, "dilation", (1, 1), 1)
    else:
        stride = _pair(op, "stride", kernel, 1)
        if op.get("dilation") is not None and _pair(op, "dilation", (1, 1), 1) != (1, 1):
            raise ValueError("%s: pooling has no dilation" % kind)
        dilation = (1, 1)
    padding = _pair(op, "padding", (0, 0), 0)
    groups = 1
    out_c = c
    if kind == "conv2d":
        groups = op.get("groups", 1)
        if groups is None:
            groups = 1
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError("conv2d.groups must be a positive integer")
        if op.get("in_channels") != c:
            raise ValueError("conv2d in_channels=%s but the sample has %d channels" % (op.get("in_channels"), c))
        out_c = op.get("out_channels")
        if isinstance(out_c, bool) or not isinstance(out_c, int) or out_c < 1:
            raise ValueError("conv2d.out_channels must be a positive integer")
        if c % groups or out_c % groups:
            raise ValueError("conv2d groups=%d must divide in_channels %d and out_channels %d" % (groups, c, out_c))
    else:
        # PyTorch: "pad should be at most half of effective kernel size"
        if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
            raise ValueError("%s: padding %s more than half the kernel %s" % (kind, padding, kernel))
    out = []
    for n, k, s, p, d in zip((h, w), kernel, stride, padding, dilation):
        span = n + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise ValueError("%s: a %s window does not fit a %dx%d sample" % (kind, list(kernel), h, w))
        out.append(span // s + 1)
    return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
            "groups": groups, "out_shape": [out_c, out[0], out[1]]}


def validate(cfg, tensors):
    """Check a config against FORMAT.md and the tensors it names. Raises ValueError."""
    def fail(msg):
        raise ValueError("invalid model: " + msg)

    if cfg.get("format") != FORMAT_NAME or cfg.get("version") != FORMAT_VERSION:
        fail("format/version")
    if "layout" in cfg and cfg["layout"] != "NCHW":
        fail("layout must be NCHW")
    shape = cfg["input"]["shape"]
    if not shape or any(int(s) <= 0 for s in shape):
        fail("input.shape")
    nch = int(shape[0])
    for key in ("mean", "std"):
        v = cfg["input"].get(key)
        if v is not None and len(v) not in (1, nch):
            fail("input.%s must have 1 or %d values" % (key, nch))
    if "std" in cfg["input"] and any(s == 0 for s in cfg["input"]["std"]):
        fail("input.std contains 0")
    ncls = len(cfg["classes"])
    if ncls < 1:
        fail("no classes")
    used = set()

    def need(name, shp):
        if name not in tensors:
            fail("tensor %s missing" % name)
        if list(tensors[name].shape) != list(shp):
            fail("tensor %s has shape %s, expected %s" % (name, list(tensors[name].shape), shp))
        used.add(name)

    def run_ops(ops, shape, where):
        """``shape``: the current sample shape; a vector is a 1-element list."""
        for op in ops:
            kind = op["op"]
            flat = len(shape) == 1
            width = _numel(shape)
            if kind == "flatten":
                shape = [width]
            elif kind == "relu":
                pass  # element-wise, any shape
            elif kind == "residual":  # any shape; the body must keep it
                s2 = run_ops(op["ops"], shape, where + "/residual")
                if list(s2) != list(shape):
                    fail("%s: residual changes the shape %s -> %s" % (where, list(shape), list(s2)))
            elif kind in _CONV_OPS:
                if len(shape) != 3:
                    fail("%s: %s needs a [C, H, W] sample, got shape %s" % (where, kind, list(shape)))
                try:
                    geo = conv_geometry(op, shape)
                except ValueError as e:
                    fail("%s: %s" % (where, e))
                if kind == "conv2d":
                    if op.get("activation", "none") not in ("none", "relu", "gelu"):
                        fail("%s: bad activation" % where)
                    kh, kw = geo["kernel"]
                    need(op["weight"], [op["out_channels"], op["in_channels"] // geo["groups"], kh, kw])
                    if op.get("bias") is not None:
                        need(op["bias"], [op["out_channels"]])
                shape = geo["out_shape"]
            elif not flat:
                fail("%s: %s before flatten on a multi-dimensional input" % (where, kind))
            elif kind == "linear":
                if op["in"] != width:
                    fail("%s: linear in=%d but width is %d" % (where, op["in"], width))
                if op.get("activation", "none") not in ("none", "relu", "gelu"):
                    fail("%s: bad activation" % where)
                need(op["weight"], [op["out"], op["in"]])
                if op.get("bias") is not None:
                    need(op["bias"], [op["out"]])
                shape = [op["out"]]
            elif kind == "layernorm":
                if op["dim"] != width:
                    fail("%s: layernorm dim=%d but width is %d" % (where, op["dim"], width))
                for k in ("weight", "bias"):
                    if op.get(k) is not None:
                        need(op[k], [op["dim"]])
            else:
                fail("%s: unknown op %s" % (where, kind))
        return list(shape)

    shape = [int(s) for s in shape]
    stages = cfg["stages"]
    if not stages:
        fail("no stages")
    for i, st in enumerate(stages):
        shape = run_ops(st["ops"], shape, "stage %d" % i)
        if "exit" in st:
            s = run_ops(st["exit"], shape, "stage %d exit" % i)
            if _numel(s) != ncls:
                fail("stage %d exit outputs %d values, %d classes" % (i, _numel(s), ncls))
        elif i == len(stages) - 1:
            fail("last stage has no exit")
    extra = set(tensors) - used
    if extra:
        fail("tensors not named by the config: %s" % sorted(extra))


# --------------------------------------------------------------------------------------
# reference forward
# --------------------------------------------------------------------------------------

def _as_desc(model_or_desc):
    """Accept a model directory, a ``(config, tensors)`` pair, a dict with ``config`` and
    ``tensors``, a ModelBuilder, or an object with a ``to_builder()`` method."""
    m = model_or_desc
    if isinstance(m, (str, Path)):
        cfg, tensors, _ = load_model(str(m))
        return cfg, tensors
    if isinstance(m, ModelBuilder):
        return m.config(), m.tensors
    if hasattr(m, "to_builder"):
        b = m.to_builder()
        return b.config(), b.tensors
    if isinstance(m, dict):
        return m["config"], m["tensors"]
    cfg, tensors = m
    return cfg, tensors


def normalise(cfg, x):
    """Apply ``(x - mean[c]) / std[c]``; ``x`` is ``[N, *input.shape]`` or ``[N, numel]``."""
    shape = cfg["input"]["shape"]
    n = x.shape[0]
    x = x.reshape(n, int(shape[0]), -1)
    mean = cfg["input"].get("mean")
    std = cfg["input"].get("std")
    if mean is not None:
        m = torch.tensor(mean, dtype=torch.float32).to(x.dtype)
        x = x - (m if len(mean) == 1 else m.view(1, -1, 1))
    if std is not None:
        s = torch.tensor(std, dtype=torch.float32).to(x.dtype)
        x = x / (s if len(std) == 1 else s.view(1, -1, 1))
    return x.reshape((n,) + tuple(int(s) for s in shape))


def _apply_ops(ops, x, tensors):
    for op in ops:
        kind = op["op"]
        if kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "linear":
            w = tensors[op["weight"]].to(x.dtype)
            b = tensors[op["bias"]].to(x.dtype) if op.get("bias") is not None else None
            x = F.linear(x, w, b)
            act = op.get("activation", "none")
            if act == "relu":
                x = torch.relu(x)
            elif act == "gelu":
                x = F.gelu(x)  # exact: 0.5 x (1 + erf(x / sqrt 2))
            elif act != "none":
                raise ValueError("bad activation %s" % act)
        elif kind == "layernorm":
            dim = int(op["dim"])
            w = tensors[op["weight"]].to(x.dtype) if op.get("weight") is not None else None
            b = tensors[op["bias"]].to(x.dtype) if op.get("bias") is not None else None
            # biased variance over the whole sample vector, as torch.nn.LayerNorm
            x = F.layer_norm(x, (dim,), w, b, float(op.get("eps", 1e-5)))
        elif kind == "residual":
            x = x + _apply_ops(op["ops"], x, tensors)
        elif kind == "relu":
            x = torch.relu(x)  # NaN stays NaN
        elif kind in _CONV_OPS:
            geo = conv_geometry(op, list(x.shape[1:]))
            if kind == "conv2d":
                w = tensors[op["weight"]].to(x.dtype)
                b = tensors[op["bias"]].to(x.dtype) if op.get("bias") is not None else None
                # zero padding, cross-correlation, as torch.nn.Conv2d
                x = F.conv2d(x, w, b, stride=geo["stride"], padding=geo["padding"],
                             dilation=geo["dilation"], groups=geo["groups"])
                act = op.get("activation", "none")
                if act == "relu":
                    x = torch.relu(x)
                elif act == "gelu":
                    x = F.gelu(x)
                elif act != "none":
                    raise ValueError("bad activation %s" % act)
            elif kind == "maxpool":
                # padding acts as -inf (never selected), floor mode
                x = F.max_pool2d(x, geo["kernel"], geo["stride"], geo["padding"])
            elif kind == "avgpool":
                # zero padding counted in the divisor (always kh*kw), floor mode
                x = F.avg_pool2d(x, geo["kernel"], geo["stride"], geo["padding"],
                                 ceil_mode=False, count_include_pad=True)
            else:  # global_avgpool
                x = x.mean(dim=(2, 3), keepdim=True)
            assert list(x.shape[1:]) == geo["out_shape"], (kind, list(x.shape), geo)
        else:
            raise ValueError("unknown op %s" % kind)
    return x


@torch.no_grad()
def forward_exits(model_or_desc, x, dtype=torch.float32, batch=4096):
    """Reference forward pass: returns a list (one entry per exit, in stage order) of
    ``[N, num_classes]`` logits.  ``x`` holds raw inputs in [0, 1], shaped
    ``[N, *input.shape]`` or ``[N, numel]``; computation is done in ``dtype`` with the
    weights as given (upcast to ``dtype``)."""
    cfg, tensors = _as_desc(model_or_desc)
    x = torch.as_tensor(x)
    outs = None
    for start in range(0, x.shape[0], batch):
        h = normalise(cfg, x[start:start + batch].to(dtype))
        if len(cfg["input"]["shape"]) == 1:
            h = h.reshape(h.shape[0], -1)
        res = []
        for st in cfg["stages"]:
            h = _apply_ops(st["ops"], h, tensors)
            if "exit" in st:
                res.append(_apply_ops(st["exit"], h, tensors))
        outs = [[r] for r in res] if outs is None else [o + [r] for o, r in zip(outs, res)]
    return [torch.cat(o, 0) for o in outs]


def _walk_flops(ops, shape, count_other):
    """(flops, out_shape) of an op list.  ``count_other`` False: 2*MACs of conv2d and
    linear only.  True: everything else, roughly (see ``model_other_flops``)."""
    total = 0
    for op in ops:
        kind = op["op"]
        if kind == "flatten":
            shape = [_numel(shape)]
        elif kind == "relu":
            total += _numel(shape) if count_other else 0
        elif kind == "linear":
            out = int(op["out"])
            if count_other:
                total += (out if op.get("bias") is not None else 0)
                total += (out if op.get("activation", "none") != "none" else 0)
            else:
                total += 2 * int(op["in"]) * out
            shape = [out]
        elif kind == "layernorm":
            total += 8 * int(op["dim"]) if count_other else 0
        elif kind == "residual":
            inner, _ = _walk_flops(op["ops"], shape, count_other)
            total += inner + (_numel(shape) if count_other else 0)
        elif kind in _CONV_OPS:
            geo = conv_geometry(op, shape)
            kh, kw = geo["kernel"]
            n_out = _numel(geo["out_shape"])
            if kind == "conv2d":
                if count_other:
                    total += (n_out if op.get("bias") is not None else 0)
                    total += (n_out if op.get("activation", "none") != "none" else 0)
                else:
                    total += 2 * n_out * (int(shape[0]) // geo["groups"]) * kh * kw
            elif count_other:
                # max: kh*kw-1 comparisons per output; avg: kh*kw adds + 1 scale
                total += n_out * (kh * kw - 1 if kind == "maxpool" else kh * kw)
            shape = geo["out_shape"]
        else:
            raise ValueError("unknown op %s" % kind)
    return total, shape


def model_flops(cfg):
    """Per-exit FLOP counts, 2*MACs of every conv2d (2 * out_elements * in_channels/groups
    * kh * kw) and linear (2*in*out), with the sample shape tracked through the ops.

    Returns a list of dicts with ``backbone`` (stages 0..k bodies), ``head`` (exit k head),
    ``exit_path`` (backbone + this head) and ``cascade`` (backbone + heads of all exits
    0..k, i.e. the cost when every earlier exit was also evaluated), plus ``full``: all
    stage bodies + the final exit head (the model without early exits).
    """
    rows, backbone, heads = [], 0, 0
    shape = [int(s) for s in cfg["input"]["shape"]]
    for st in cfg["stages"]:
        f, shape = _walk_flops(st["ops"], shape, False)
        backbone += f
        if "exit" in st:
            head, _ = _walk_flops(st["exit"], shape, False)
            heads += head
            rows.append({"backbone": backbone, "head": head, "exit_path": backbone + head,
                         "cascade": backbone + heads})
    full = rows[-1]["exit_path"]
    for r in rows:
        r["full"] = full
    return rows


def model_other_flops(cfg):
    """Rough count of everything ``model_flops`` leaves out, for the full model (all stage
    bodies + final exit head): input normalisation 2/element, bias add 1/output,
    relu/gelu 1/element (fused or standalone), maxpool kh*kw-1 and avgpool kh*kw per
    output, global_avgpool 1/input element, layernorm 8/element, residual add 1/element."""
    shape = [int(s) for s in cfg["input"]["shape"]]
    total = 2 * _numel(shape) if ("mean" in cfg["input"] or "std" in cfg["input"]) else 0
    for st in cfg["stages"]:
        f, shape = _walk_flops(st["ops"], shape, True)
        total += f
    f, _ = _walk_flops(cfg["stages"][-1]["exit"], shape, True)
    return total + f


# --------------------------------------------------------------------------------------
# JSON with 9-significant-digit floats
# --------------------------------------------------------------------------------------

def fmt_float(v):
    """Float rounded to float32 precision, printed with 9 significant digits (round-trips)."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError("non-finite value %r" % v)
    v = float(torch.tensor(v, dtype=torch.float32))
    s = "%.9g" % v
    return "0" if s == "-0" else s


class ExactFloat(float):
    """A float that ``dump_json`` prints with ``repr`` (shortest double round-trip)
    instead of rounding it to float32 precision, e.g. accuracies such as 0.8912."""


def dump_json(obj, indent=0, _level=0, inline_depth=1):
    """Serialise ``obj`` to JSON text.  Floats use ``fmt_float``.  Lists of scalars are
    written on one line; dicts/lists of containers are indented."""
    def scalar(v):
        if isinstance(v, bool) or v is None:
            return json.dumps(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, ExactFloat):
            return repr(float(v))
        if isinstance(v, float):
            return fmt_float(v)
        if isinstance(v, str):
            return json.dumps(v)
        if hasattr(v, "item"):  # numpy / torch scalar
            return scalar(v.item())
        raise TypeError(type(v))

    def is_scalar(v):
        return not isinstance(v, (list, tuple, dict))

    pad = " " * (indent * (_level + 1))
    end = " " * (indent * _level)
    nl = "\n" if indent else ""
    if isinstance(obj, dict):
        items = ['%s%s: %s' % (pad, json.dumps(str(k)), dump_json(v, indent, _level + 1))
                 for k, v in obj.items()]
        return "{" + nl + ("," + nl).join(items) + nl + end + "}"
    if isinstance(obj, (list, tuple)):
        if all(is_scalar(v) for v in obj):
            return "[" + ", ".join(scalar(v) for v in obj) + "]"
        items = [pad + dump_json(v, indent, _level + 1) for v in obj]
        return "[" + nl + ("," + nl).join(items) + nl + end + "]"
    return scalar(obj)


def write_json(path, obj, indent=1):
    text = dump_json(obj, indent) + "\n"
    json.loads(text)  # sanity check
    with open(path, "w") as f:
        f.write(text)
