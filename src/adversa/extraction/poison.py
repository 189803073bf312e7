"""Prediction poisoning, the MAD defense (Orekondy, Schiele & Fritz 2020, "Prediction
Poisoning: Towards Defenses Against DNN Model Stealing Attacks", ICLR, arXiv:1906.10908).

An attacker who trains a copy on the returned probabilities y follows the gradient
G^T y of the log-likelihood, where G (K, D) holds the gradients of log p_k(x; w) with
respect to the copy's parameters w. MAD returns instead a y~ within an L1 budget
(||y~ - y||_1 <= eps, y~ on the simplex) that maximises the angular deviation between
G^T y~ and G^T y, i.e. minimises their cosine. The defender does not know the attacker's
copy and uses a surrogate in its place; like the paper, a *randomly initialised* network of
the attacker's likely architecture (small-cnn for images, mlp otherwise; seeded, with a salt
so that it differs from a copy initialised with the same seed).

Everything the objective needs is the per-sample Gram matrix M = G G^T (K, K):
cos(G^T a, G^T b) = a^T M b / sqrt(a^T M a * b^T M b). `class_gradient_gram` computes M
exactly over the weights and biases of the surrogate's Linear and Conv2d layers, batched:
one forward and K backward passes per batch (for a Linear layer with input h and output
gradients d_k, the block of M is (d_j . d_k) (|h|^2 + 1) without forming G; Conv2d layers
form their per-sample weight gradients, which are small).

The paper's heuristic, batched: the maximiser of the (convex) deviation over the simplex is
searched among its K vertices e_k; each candidate is mixed with the true vector,
y~ = (1 - a) y + a e_k with a = min(1, eps / ||e_k - y||_1), which meets the budget exactly
and stays on the simplex; the candidate with the smallest cosine at its mixed point is
returned (with eps >= 2 this is the paper's vertex search). The argmax-preserving variant
(MAD-argmax) caps each a so that the mixed vector keeps y's top label.

Cost per query: one forward and K backward passes of the surrogate (never the target's).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.nets import build_arch

CHUNK = 256  # samples per Gram batch (Conv2d per-sample gradients are formed per chunk)


SALT = 0x6D6164  # keeps the surrogate's initialisation apart from an attacker's copy's


@functools.lru_cache(maxsize=8)
def surrogate(arch: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """The defender's randomly initialised surrogate, seeded by `seed` plus a salt, so that it
    is not the very initialisation an extraction copy of the same seed starts from (torch's
    global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SALT + seed)
        return build_arch(arch, input_shape, num_classes).eval()


def class_gradient_gram(net: nn.Module, x: Tensor) -> Tensor:
    """M (B, K, K): M[b, j, k] = <grad_w log p_j(x_b), grad_w log p_k(x_b)> over the weights
    and biases of `net`'s Linear and Conv2d layers (other parameters are left out)."""
    return torch.cat([_gram(net, x[i : i + CHUNK]) for i in range(0, x.shape[0], CHUNK)])


def _gram(net: nn.Module, x: Tensor) -> Tensor:
    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    seen: list[tuple[nn.Module, Tensor, Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].detach(), out)))
        for m in layers
    ]
    try:
        with torch.enable_grad():
            log_p = nn.functional.log_softmax(net(x.detach()).float(), 1)
            outs = [out for _, _, out in seen]
            k = log_p.shape[1]
            grads = [
                torch.autograd.grad(log_p[:, j].sum(), outs, retain_graph=j < k - 1)
                for j in range(k)
            ]
    finally:
        for hook in hooks:
            hook.remove()
    gram = x.new_zeros(x.shape[0], k, k, dtype=torch.float32)
    for i, (mod, inp, _) in enumerate(seen):
        delta = torch.stack([g[i] for g in grads], 1).float()  # (B, K, *out)
        if isinstance(mod, nn.Linear):
            if inp.dim() != 2:
                raise BadInput(f"poison surrogate: Linear input of shape {tuple(inp.shape)}")
            scale = inp.float().pow(2).sum(1) + (mod.bias is not None)
            gram += torch.einsum("bjo,bko->bjk", delta, delta) * scale.view(-1, 1, 1)
        else:
            gram += _conv_gram(mod, inp.float(), delta)
    return gram


def _conv_gram(mod: nn.Conv2d, inp: Tensor, delta: Tensor) -> Tensor:
    """The Conv2d layer's block of M from its per-sample weight (and bias) gradients."""
    if mod.groups != 1 or isinstance(mod.padding, str):
        raise BadInput("poison surrogate: only Conv2d with groups=1 and numeric padding")
    cols = nn.functional.unfold(inp, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
    delta = delta.flatten(3)  # (B, K, out_channels, positions)
    grad_w = torch.einsum("bkop,bcp->bkoc", delta, cols).flatten(2)
    gram = torch.einsum("bjd,bkd->bjk", grad_w, grad_w)
    if mod.bias is not None:
        grad_b = delta.sum(3)
        gram += torch.einsum("bjo,bko->bjk", grad_b, grad_b)
    return gram


def mad(probs: Tensor, gram: Tensor, eps: float, argmax: bool = False) -> Tensor:
    """The poisoned probabilities (B, K) for true `probs` (B, K) and the surrogate's Gram
    matrices (B, K, K): among the K vertex mixes within L1 budget `eps`, the one whose
    gradient direction deviates most from the true one (see the module docstring)."""
    probs = probs.float()
    b, k = probs.shape
    eye = torch.eye(k, device=probs.device, dtype=probs.dtype)
    dist = (eye.unsqueeze(0) - probs.unsqueeze(1)).abs().sum(2)  # (B, K): ||e_k - y||_1
    alpha = (eps / dist.clamp_min(1e-12)).clamp(max=1.0)
    if argmax:
        top = probs.max(1, keepdim=True)
        gap = top.values - probs  # y_c - y_k >= 0
        cap = gap / (1 + gap) * (1 - 1e-4)  # the largest mix keeping c on top
        is_top = torch.arange(k, device=probs.device).view(1, -1) == top.indices
        alpha = torch.where(is_top, alpha, torch.minimum(alpha, cap))
    cand = (1 - alpha).unsqueeze(2) * probs.unsqueeze(1) + alpha.unsqueeze(2) * eye  # (B, K, K)
    my = torch.einsum("bjk,bk->bj", gram, probs)  # M y
    ymy = (probs * my).sum(1, keepdim=True)
    num = torch.einsum("bck,bk->bc", cand, my)
    cmc = torch.einsum("bcj,bjk,bck->bc", cand, gram, cand)
    cos = num / (cmc * ymy).clamp_min(1e-30).sqrt()
    pick = cos.argmin(1)
    return cand[torch.arange(b, device=probs.device), pick]


def poison(
    probs: Tensor, x: Tensor, eps: float, argmax: bool, arch: str | None, seed: int
) -> Tensor:
    """MAD-poisoned probabilities for inputs `x` whose true probabilities are `probs`, with
    the surrogate `arch` (None: small-cnn for images, mlp otherwise) initialised by `seed`."""
    shape = tuple(x.shape[1:])
    name = arch or ("small-cnn" if len(shape) == 3 else "mlp")
    net = surrogate(name, shape, probs.shape[1], seed).to(x.device)
    return mad(probs, class_gradient_gram(net, x), eps, argmax).to(probs.dtype)
