"""PyTorch Lightning drives fusedopt's optimizers like torch's: bf16-mixed and
16-mixed, with gradient_clip_val (by norm and by value), give torch's results.
Skipped where lightning is not installed (it is in the test extra)."""

import warnings

import pytest
import torch

import fusedopt

pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed")


class _Tiny(pl.LightningModule):
    def __init__(self, opt_factory):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.opt_factory = opt_factory

    def training_step(self, batch, batch_idx):
        x, y = batch
        # large targets: the grads' norm is well above the clip value
        return torch.nn.functional.mse_loss(self.net(x).float(), y)

    def configure_optimizers(self):
        return self.opt_factory(self.parameters())


def _fp16_plugin(scaler_cls=torch.amp.GradScaler):
    # "16-mixed" as a string falls back to bf16 on the CPU; the plugin does not
    from lightning.pytorch.plugins import MixedPrecision

    return [MixedPrecision("16-mixed", "cpu", scaler=scaler_cls("cpu", init_scale=2.0**12))]


def _fit(opt_factory, precision, clip_algorithm, plugins=None):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=gen)
    y = torch.randn(32, 1, generator=gen) * 50
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    if precision == "16-mixed":
        precision, plugins = None, plugins or _fp16_plugin()
    model = _Tiny(opt_factory)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        precision=None if plugins else precision,
        plugins=plugins,
        gradient_clip_val=0.5,
        gradient_clip_algorithm=clip_algorithm,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    return [p.detach().clone() for p in model.parameters()], trainer


OPTIMIZERS = [
    (lambda ps: fusedopt.AdamW(ps, lr=1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    (lambda ps: fusedopt.SGD(ps, lr=1e-2, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9)),
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
@pytest.mark.parametrize("clip_algorithm", ["norm", "value"])
@pytest.mark.parametrize("pair", OPTIMIZERS, ids=["AdamW", "SGD"])
def test_lightning_with_gradient_clipping_matches_torch(precision, clip_algorithm, pair):
    ours, theirs = pair
    pa, _ = _fit(ours, precision, clip_algorithm)
    pb, _ = _fit(theirs, precision, clip_algorithm)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lightning_16_mixed_with_fusedopts_scaler_matches_torch():
    ours = _fit(lambda ps: fusedopt.AdamW(ps, lr=1e-2), "16-mixed", "norm", plugins=_fp16_plugin(fusedopt.GradScaler))[0]
    theirs = _fit(lambda ps: torch.optim.AdamW(ps, lr=1e-2), "16-mixed", "norm")[0]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
