"""A short training, fusedopt against torch.optim on the same model and data:
run by tests/test_torch_matrix.py with the python of each venv of the torch
matrix (the installed wheel beside that torch). Prints, as JSON, per setup:
the first and last loss of both runs, the largest parameter difference, and
which backend updated the params, for the test to judge.

The setups are the ones a user swaps in: AdamW with clipping inside the step
(torch: clip_grad_norm_ then AdamW), SGD with Nesterov momentum, and the AMP
pipeline with a GradScaler (fusedopt's fused loop against torch's idiom)."""

from __future__ import annotations

import json

import torch

import fusedopt

STEPS = 40


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g)
    w = torch.randn(16, 1, generator=g)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(256, 1, generator=g)
    return x, y


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 1))


def _train(make_opt, clip_outside: bool, scaler=None) -> tuple[list[float], torch.nn.Module, object]:
    x, y = _data()
    model = _model()
    opt = make_opt(model.parameters())
    losses = []
    for step in range(STEPS):
        rows = slice(64 * (step % 4), 64 * (step % 4 + 1))
        loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
        losses.append(loss.item())
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            if clip_outside:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        else:
            scaler.scale(loss).backward()
            if clip_outside:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
    return losses, model, opt


def _compare(name, ours, theirs) -> dict:
    (l_ours, m_ours, opt), (l_theirs, m_theirs, _) = ours, theirs
    diff = max((p - q).abs().max().item() for p, q in zip(m_ours.parameters(), m_theirs.parameters()))
    return {
        "setup": name,
        "fusedopt_losses": [l_ours[0], l_ours[-1]],
        "torch_losses": [l_theirs[0], l_theirs[-1]],
        "max_param_diff": diff,
        "backends": opt.step_backends(),
    }


def main() -> None:
    results = [
        _compare(
            "AdamW, clip 1.0",
            _train(lambda p: fusedopt.AdamW(p, lr=1e-2, weight_decay=0.1, max_grad_norm=1.0), clip_outside=False),
            _train(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False), clip_outside=True),
        ),
        _compare(
            "SGD, Nesterov momentum",
            _train(lambda p: fusedopt.SGD(p, lr=5e-2, momentum=0.9, nesterov=True, weight_decay=1e-4),
                   clip_outside=False),
            _train(lambda p: torch.optim.SGD(p, lr=5e-2, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                             foreach=False), clip_outside=False),
        ),
        _compare(
            "AMP: GradScaler + clip 1.0 + Adam",
            _train(lambda p: fusedopt.Adam(p, lr=1e-2, max_grad_norm=1.0), clip_outside=False,
                   scaler=fusedopt.GradScaler("cpu", init_scale=2.0**12)),
            _train(lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False), clip_outside=True,
                   scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12)),
        ),
    ]
    print(json.dumps({"torch": torch.__version__, "params": len(list(_model().parameters())), "results": results}))


if __name__ == "__main__":
    main()
