"""Seconds per training step (forward + backward + AdamW step) of the transfer-learning backbones.

    python bench/backbones.py [--steps 5] [--device cpu|cuda] [--only resnet18,distilbert]

Random weights (no download): the speed of a step does not depend on the weights. Images at each
model's pretrained input size (224×224, batch 32); the text encoder is distilbert-base-uncased's
shape (6 layers, hidden 768, vocabulary 30,522) at 256 tokens, batch 16. Each backbone gets a
binary head as in the template (`TimmNet`, `TransformerNet`). Reports the median of `--steps` timed
steps after one warm-up step, and images (or texts) per second.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dltemplate.image.nets.timm import TimmNet
from dltemplate.text.nets.transformer import TransformerNet

DISTILBERT = {
    "model_type": "distilbert",
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
}


def cases(batch_images: int, batch_texts: int, length: int):
    """(name, net factory, input factory, batch size)."""
    for name in ("resnet18", "convnext_nano", "vit_tiny_patch16_224"):
        yield name, lambda n=name: TimmNet(n), lambda b=batch_images: torch.randn(b, 3, 224, 224), batch_images
    yield (
        f"distilbert (L={length})",
        lambda: TransformerNet("distilbert-base-uncased", config=DISTILBERT),
        lambda: torch.randint(1000, 30522, (batch_texts, length)),
        batch_texts,
    )


def time_steps(net: torch.nn.Module, make_input, steps: int, device: str) -> list[float]:
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = make_input().to(device)
    target = torch.randint(0, 2, (x.shape[0], 1), device=device).float()
    times = []
    for step in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(net(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-images", type=int, default=32)
    parser.add_argument("--batch-texts", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--only", default=None, help="comma-separated name prefixes")
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'backbone':<24} {'params':>8} {'batch':>5} {'s/step':>8} {'samples/s':>10}")
    for name, make_net, make_input, batch in cases(args.batch_images, args.batch_texts, args.length):
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        torch.manual_seed(0)
        net = make_net()
        params = sum(p.numel() for p in net.parameters()) / 1e6
        median = statistics.median(time_steps(net, make_input, args.steps, args.device))
        print(f"{name:<24} {params:>7.1f}M {batch:>5} {median:>8.3f} {batch / median:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
