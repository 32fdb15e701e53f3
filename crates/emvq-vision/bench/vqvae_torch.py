"""The emvq CIFAR-10 VQ-VAE training step written in PyTorch.

Spawned by `cargo run --release -p emvq-vision --example bench_vqvae`, which
times the same steps in emvq (Rust/tch) and prints images/s side by side.
Same network as crates/emvq-vision/src/model.rs (conv_in 3x3; k x [ReLU,
conv 4x4 stride 2]; residual blocks x + conv1x1(relu(conv3x3(relu(x))));
ReLU, conv 1x1 to the latent size; the decoder mirrored with transposed
convolutions and a 1x1 conv to 3 x 256 logits), the same loss (sum of the
3072 per-subpixel cross-entropies / 3072, batch mean, plus the bottleneck's
commitment loss), the bottleneck of crates/emvq-bottleneck/bench/
bottleneck_torch.py (VQ or Monte-Carlo soft EM with EMA codebooks, n_c
slices), Adam (0.9, beta2, 1e-8), gradient clipping by global norm.
Protocol: prints one JSON line {"threads": .., "torch": ..}; then for each
integer N read on stdin runs N training steps (cycling over the batches)
and prints their wall time in ms; "quit" ends.
"""

import argparse
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "emvq-bottleneck", "bench"))
from bottleneck_torch import Bottleneck  # noqa: E402


class ResBlock(nn.Module):
    def __init__(self, c, inner):
        super().__init__()
        self.conv1 = nn.Conv2d(c, inner, 3, padding=1)
        self.conv2 = nn.Conv2d(inner, c, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VqVae(nn.Module):
    def __init__(self, m, device):
        super().__init__()
        h, d, k = m["hidden"], m["latent_dim"], m.get("downsamples", 2)
        self.enc_in = nn.Conv2d(3, h, 3, padding=1)
        self.downs = nn.ModuleList([nn.Conv2d(h, h, 4, stride=2, padding=1) for _ in range(k)])
        self.enc_blocks = nn.ModuleList([ResBlock(h, m["res_hidden"]) for _ in range(m["res_blocks"])])
        self.enc_out = nn.Conv2d(h, d, 1)
        self.dec_in = nn.Conv2d(d, h, 3, padding=1)
        self.dec_blocks = nn.ModuleList([ResBlock(h, m["res_hidden"]) for _ in range(m["res_blocks"])])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(h, h, 4, stride=2, padding=1) for _ in range(k)])
        self.dec_out = nn.Conv2d(h, 3 * 256, 1)
        b = m["bottleneck"]
        self.bottleneck = Bottleneck(
            d, b.get("bits", 12), b.get("n_c", b.get("slices", 1)), b.get("kind", "vq"), b.get("samples", 10), device
        )
        self.bottleneck.decay = b.get("decay", 0.999)
        self.bottleneck.beta = b.get("beta", 0.25)

    def forward(self, images):
        x = images.float() / 127.5 - 1.0  # [b, 3, 32, 32]
        h = self.enc_in(x)
        for down in self.downs:
            h = down(F.relu(h))
        for block in self.enc_blocks:
            h = block(h)
        z = self.enc_out(F.relu(h)).permute(0, 2, 3, 1)  # [b, g, g, d]
        q, _, _, commitment = self.bottleneck.forward(z, True)
        h = self.dec_in(q.permute(0, 3, 1, 2))
        for block in self.dec_blocks:
            h = block(h)
        for up in self.ups:
            h = up(F.relu(h))
        b = images.shape[0]
        logits = self.dec_out(F.relu(h)).view(b, 3, 256, 32, 32)
        logp = logits.log_softmax(2).gather(2, images.long().unsqueeze(2))  # [b, 3, 1, 32, 32]
        nll = -logp.flatten(1).sum(1)  # [b]
        return nll.mean() / 3072.0 + commitment


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True, help="cifar-10-batches-bin folder")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--batches", type=int, required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    device = torch.device(a.device)
    torch.manual_seed(0)
    raw = np.fromfile(os.path.join(a.data, "data_batch_1.bin"), dtype=np.uint8).reshape(-1, 3073)
    images = torch.from_numpy(raw[: a.batch * a.batches, 1:].copy()).view(-1, 3, 32, 32).to(device)
    model = VqVae(cfg["model"], device).to(device)
    t = cfg["train"]
    opt = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=(0.9, t["adam_beta2"]), eps=1e-8)
    clip = t["clip_norm"]
    step = 0

    def train_step():
        nonlocal step
        batch = images[(step % a.batches) * a.batch : (step % a.batches + 1) * a.batch]
        step += 1
        loss = model(batch)
        opt.zero_grad()
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if line == "quit":
            break
        n = int(line)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            loss = train_step()
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        print(f"{(time.perf_counter() - start) * 1000.0:.3f}", flush=True)


if __name__ == "__main__":
    main()
