# Independent check of exitrt's contrast corruption on fmnist-cnn (PyTorch, no exitrt code):
# the shipped safetensors and config, the contrast formula of runtime/shift.c (toward the
# per-image mean, clamped to [0, 1]), the final exit. Run from the repository root with
# /usr/bin/python3 (Debian python3-torch).
import gzip, json, struct, sys
import numpy as np, torch, torch.nn.functional as F
d = "models/fmnist-cnn/"  # run from the repository root
f = open(d + "model.safetensors", "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
raw = open(d + "model.safetensors", "rb").read()
W = {k: torch.from_numpy(np.frombuffer(raw[base + v["data_offsets"][0]: base + v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"]).copy())
     for k, v in h.items() if k != "__metadata__"}
cfg = json.load(open(d + "config.json")); mean, std = cfg["input"]["mean"][0], cfg["input"]["std"][0]
def fwd(x):
    x = (x - mean) / std
    c = lambda x, p: F.relu(F.conv2d(x, W[p + ".weight"], W[p + ".bias"], padding=1))
    x = c(x, "stages.0.conv0"); x = F.max_pool2d(x, 2); x = c(x, "stages.0.conv1")
    x = c(x, "stages.1.conv0"); x = F.max_pool2d(x, 2); x = c(x, "stages.1.conv1")
    x = c(x, "stages.2.conv0"); x = F.max_pool2d(x, 2, padding=1).flatten(1)
    x = F.relu(F.linear(x, W["stages.2.fc.weight"], W["stages.2.fc.bias"]))
    return F.linear(x, W["exits.2.fc.weight"], W["exits.2.fc.bias"])
img = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8)
lab = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
x = torch.from_numpy(img.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0); y = torch.from_numpy(lab.astype(np.int64))
for factor in (1.0, 0.5, 0.4, 0.3, 0.2, 0.1):
    m = x.mean(dim=(2, 3), keepdim=True)
    xc = (m + factor * (x - m)).clamp(0, 1)
    with torch.no_grad():
        acc = (fwd(xc).argmax(1) == y).float().mean().item()
    print(f"contrast factor {factor}: final-exit accuracy {100 * acc:.2f}%")
