"""The emvq bottleneck's benchmark computation written in PyTorch.

Spawned by `cargo run --release -p emvq-bottleneck --example bench_bottleneck`,
which times the same cases in emvq (Rust/tch) and prints both side by side.
Same maths and algorithm as crates/emvq-bottleneck/src/vq.rs: squared
distances ||x||^2 + ||e||^2 - 2 x.e by one baddbmm, argmin (VQ) or
multinomial sampling of m codes from softmax(-d/T) (soft EM), fractional
counts r, straight-through output, commitment loss, EMA update with
Laplace-smoothed counts (bincount / index_add_), written the way one would in
plain PyTorch. emvq differs only in three memory-saving choices: the softmax
and the scatter of r run in place, and the mean of the sampled codes is one
embedding_bag(mode="mean") instead of index_select + mean.
Protocol (driven by the example, so that the two sides alternate run by run
and a burst of load on a shared machine hits both alike): the script prints
one JSON line {"threads": .., "torch": ..}, then for each case name read on
stdin runs that case once and prints its wall time in ms; "quit" ends.
"""

import argparse
import json
import sys
import time

import torch


class Bottleneck:
    def __init__(self, d, bits, slices, kind, samples, device):
        self.s, self.k, self.c = slices, 2**bits, d // slices
        self.kind, self.samples = kind, samples
        self.beta, self.decay, self.eps, self.temperature = 0.25, 0.999, 1e-5, 1.0
        bound = (3.0 / self.k) ** 0.5
        shape = (self.s, self.k, self.c)
        self.codebook = torch.empty(shape, device=device).uniform_(-bound, bound)
        self.ema_count = torch.zeros(self.s, self.k, device=device)
        self.ema_sum = self.codebook.clone()

    def forward(self, x, train):
        size = x.shape
        xf = x.float()
        xs = xf.reshape(-1, self.s, self.c).permute(1, 0, 2)  # [s, n, c]
        xd = xs.detach()
        s, n, c = xd.shape
        k = self.k
        with torch.no_grad():
            norms = xd.square().sum(-1, keepdim=True) + self.codebook.square().sum(
                -1, keepdim=True
            ).transpose(1, 2)  # [s, n, k]
            dist = torch.baddbmm(norms, xd, self.codebook.transpose(1, 2), beta=1, alpha=-2)
            codes = dist.argmin(-1)  # [s, n]
            offsets = torch.arange(s, device=x.device) * k
            soft = None
            if self.kind == "em" and train:
                probs = (dist * (-1.0 / self.temperature)).softmax(-1)
                drawn = probs.reshape(s * n, k).multinomial(self.samples, replacement=True)
                drawn = drawn.reshape(s, n, self.samples)  # [s, n, m]
                ones = torch.ones(s, n, self.samples, device=x.device)
                soft = torch.zeros(s, n, k, device=x.device).scatter_add(2, drawn, ones) / self.samples
                assigned = drawn
            else:
                assigned = codes.unsqueeze(-1)
        flat_cb = self.codebook.reshape(s * k, c)
        if assigned.shape[-1] > 1:
            idx = assigned + offsets.view(s, 1, 1)
            q = flat_cb.index_select(0, idx.flatten()).reshape(s, n, -1, c).mean(2)
        else:
            q = flat_cb.index_select(0, (codes + offsets.view(s, 1)).flatten()).reshape(s, n, c)
        if train:
            with torch.no_grad():
                m = assigned.shape[-1]
                flat = assigned + offsets.view(s, 1, 1)
                counts = torch.bincount(flat.flatten(), minlength=s * k).float().div(m).view(s, k)
                sums = torch.zeros(s * k, c, device=x.device)
                x_flat = xd.reshape(s * n, c)
                for l in range(m):
                    sums.index_add_(0, flat[:, :, l].flatten(), x_flat)
                if m > 1:
                    sums = sums / m
                self.ema_count.lerp_(counts, 1.0 - self.decay)
                self.ema_sum.lerp_(sums.view(s, k, c), 1.0 - self.decay)
                tot = self.ema_count.sum(-1, keepdim=True)
                smoothed = (self.ema_count + self.eps) / (tot + k * self.eps) * tot
                self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))
        commitment = (xs - q.detach()).square().mean() * self.beta
        q_out = q.detach().permute(1, 0, 2).reshape(size)
        quantized = x + (q_out.to(x.dtype) - x).detach()
        return quantized, codes, soft, commitment


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--bits", type=int, default=12)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    x0 = torch.randn(a.n, a.d, device=device)
    g = torch.randn(a.n, a.d, device=device)
    vq = Bottleneck(a.d, a.bits, 1, "vq", a.samples, device)
    em = Bottleneck(a.d, a.bits, 1, "em", a.samples, device)

    def train_step(b):
        x = x0.detach().requires_grad_(True)
        quantized, _, _, commitment = b.forward(x, True)
        ((quantized * g).sum() + commitment).backward()

    def eval_step():
        with torch.no_grad():
            vq.forward(x0, False)

    cases = {
        "vq train fwd+bwd+EMA": lambda: train_step(vq),
        "em train fwd+bwd+EMA": lambda: train_step(em),
        "vq eval fwd": eval_step,
    }
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    # One case name per line on stdin; answers the wall time of one run in ms.
    for line in sys.stdin:
        name = line.strip()
        if name == "quit":
            break
        sync(device)
        start = time.perf_counter()
        cases[name]()
        sync(device)
        print(f"{(time.perf_counter() - start) * 1e3:.6f}", flush=True)


if __name__ == "__main__":
    main()
