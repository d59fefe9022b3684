"""The training step replayed as a CUDA graph (``TrainConfig.cuda_graph``, ``training._GraphedStep``).

Without CUDA the graph's bookkeeping (warm-up steps, the static input, the sums it adds to, the
eager last batch, resuming) is rehearsed on the CPU: "capture" remembers the step and "replay" runs
it on the static input, which must give the eager history bit for bit. The tests marked ``cuda``
run the real graph and skip cleanly on a machine without CUDA.
"""

import dataclasses

import pytest
import torch

from companion.data import Batches
from companion.models import GAN, VAE, FlowConfig, GANConfig, RealNVP, VAEConfig
from companion.training import EXECUTION_SETTINGS, Trainer, TrainConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = VAEConfig(latent_dim=4, hidden=(32,))


def _images(n=300, device="cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g).to(device)


def _fit(config=SMALL, *, rehearse=False, epochs=2, run_dir=None, seed=0, device="cpu", graph=True, n=300):
    trainer = Trainer.build(lambda: VAE(config), TrainConfig(epochs=epochs, seed=seed, device=device, cuda_graph=graph),
                            run_dir=run_dir, progress=False)
    trainer._rehearse_graph = rehearse
    history = trainer.fit(Batches(_images(n, device), 64, shuffle=True, binarize=True))
    return trainer, history


def _train_terms(history):
    return [{k: v for k, v in record.items() if k.startswith("train/")} for record in history]


# -- without CUDA: the bookkeeping, rehearsed ---------------------------------------------------------

def test_the_rehearsed_graph_path_gives_the_eager_history_bit_for_bit():
    """300 images in batches of 64: three warm-up steps, the capture on the fourth batch (which must
    be trained on once, by the replay that follows), and a last batch of 44 that runs eagerly. A
    batch skipped, trained twice, or sums not cleared between epochs changes the numbers."""
    eager, eager_history = _fit()
    rehearsed, rehearsed_history = _fit(rehearse=True, epochs=2)
    assert rehearsed.cuda_graph_used and not eager.cuda_graph_used
    assert _train_terms(rehearsed_history) == _train_terms(eager_history)
    for name, value in eager.model.state_dict().items():
        assert torch.equal(value, rehearsed.model.state_dict()[name]), name


def test_a_float64_model_logs_the_same_float64_sums_on_both_paths():
    """The graph's sums keep their storage; for a float64 model they must be float64 too, or the
    logged terms would be rounded to float32 on one path and not on the other."""
    def fit(rehearse):
        trainer = Trainer.build(lambda: VAE(SMALL).double(), TrainConfig(epochs=2, seed=0), progress=False)
        trainer._rehearse_graph = rehearse
        images = Batches(_images(), 64, shuffle=True, binarize=True, dtype=torch.float64)
        return trainer, trainer.fit(images)
    rehearsed, history = fit(True)
    assert rehearsed.cuda_graph_used
    assert rehearsed._last_graphed.sums["loss"].dtype == torch.float64
    assert _train_terms(history) == _train_terms(fit(False)[1])


def test_the_graph_has_the_shape_of_the_full_batches():
    """100 images in batches of 64 give 64, 36, 64, 36, ...: the fourth batch is a small one, and a
    graph captured on it would leave every full batch eager. The warm-up counts full batches only,
    so the capture happens on the fourth full batch (epoch 4) and the fifth epoch's is a replay."""
    trainer, history = _fit(rehearse=True, epochs=5, n=100)
    graphed = trainer._last_graphed
    assert trainer.cuda_graph_used and graphed.static.shape[0] == 64
    assert graphed.replays == 2 and graphed.warmed == graphed.WARMUP
    assert _train_terms(history) == _train_terms(_fit(epochs=5, n=100)[1])


def test_resuming_moves_between_the_eager_and_the_graph_path(tmp_path):
    """Two epochs on one path, the third on the other: the same history as three epochs eagerly.
    ``cuda_graph`` is an execution setting, so a checkpoint of either path resumes on the other."""
    _, straight = _fit(epochs=3)
    _fit(rehearse=True, epochs=2, run_dir=tmp_path / "a")
    _, resumed = _fit(epochs=3, run_dir=tmp_path / "a", graph=False)
    _fit(epochs=2, run_dir=tmp_path / "b", graph=False)
    trainer, resumed_on_graph = _fit(rehearse=True, epochs=3, run_dir=tmp_path / "b")
    assert trainer.cuda_graph_used
    assert _train_terms(resumed) == _train_terms(straight) == _train_terms(resumed_on_graph)
    assert "cuda_graph" in EXECUTION_SETTINGS


def test_a_checkpoint_with_capturable_adam_resumes_on_the_cpu(tmp_path):
    """The graph path sets Adam's ``capturable``, which the checkpoint keeps; on the CPU a capturable
    Adam refuses to step, so loading restores the resuming trainer's own setting."""
    trainer, _ = _fit(epochs=1, run_dir=tmp_path)
    for group in trainer.optimizer.param_groups:
        group["capturable"] = True
    trainer.save_checkpoint()
    resumed, history = _fit(epochs=2, run_dir=tmp_path)
    assert len(history) == 2 and all(not g["capturable"] for g in resumed.optimizer.param_groups)


def test_cpu_runs_stay_eager_and_say_why():
    trainer, _ = _fit(epochs=1)
    assert not trainer.cuda_graph_used
    assert "not CUDA" in trainer.cuda_graph_refusal()
    off = Trainer(VAE(SMALL), TrainConfig(cuda_graph=False, device="cpu"), progress=False)
    assert "switched off" in off.cuda_graph_refusal()
    gan = Trainer(GAN(GANConfig()), TrainConfig(device="cpu"), progress=False)
    gan._rehearse_graph = True
    assert "training_step" in gan.cuda_graph_refusal()
    with pytest.raises(TypeError, match="cuda_graph"):
        TrainConfig(cuda_graph="yes")


def test_labelled_batches_run_eagerly_on_the_graph_path():
    """A batch that is not one tensor cannot be copied into the graph's input: it runs eagerly, and
    the epoch's terms still count it."""
    images = _images(128)
    labelled = [(x, torch.zeros(len(x))) for x in Batches(images, 64, binarize=True)]

    class Unpack(VAE):
        def loss(self, batch):
            return super().loss(batch[0] if isinstance(batch, tuple) else batch)

    histories = []
    for rehearse in (False, True):
        trainer = Trainer.build(lambda: Unpack(SMALL), TrainConfig(epochs=1, device="cpu"), progress=False)
        trainer._rehearse_graph = rehearse
        histories.append(_train_terms(trainer.fit(labelled)))
    assert histories[0] == histories[1]


# -- with CUDA: the real graph --------------------------------------------------------------------

@cuda
def test_graph_and_eager_steps_train_alike_on_cuda():
    """Same seed: the graph path gives the eager path's curve, to float rounding. The graph draws its
    reparameterization noise from the same Philox stream, so the curves agree far more closely than
    two seeds do (the noise between runs)."""
    graph, graph_history = _fit(device="cuda", epochs=3, n=2000)
    eager, eager_history = _fit(device="cuda", epochs=3, n=2000, graph=False)
    _, other_seed = _fit(device="cuda", epochs=3, n=2000, graph=False, seed=1)
    assert graph.cuda_graph_used and not eager.cuda_graph_used
    for g, e, o in zip(graph_history, eager_history, other_seed):
        gap, noise = abs(g["train/loss"] - e["train/loss"]), abs(o["train/loss"] - e["train/loss"])
        assert gap <= 1e-4 * abs(e["train/loss"]), (g, e)
        assert gap < noise / 10


class _Noise(torch.nn.Module):
    """A model whose loss is (w - eps)^2 with eps ~ N(0, 1) drawn inside the step; it logs eps and eps^2."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def loss(self, x):
        eps = torch.randn((), device=x.device)
        return (self.w - eps).square() + 0 * x.mean(), {"eps": eps, "eps_sq": eps.square()}


@cuda
def test_graph_replays_draw_fresh_noise_on_cuda():
    """A replay that reused the noise drawn at capture would give every step the same eps: the
    variance of eps over an epoch's 313 steps, E[eps^2] - E[eps]^2, would be 0 instead of 1."""
    trainer = Trainer.build(_Noise, TrainConfig(epochs=2, device="cuda"), progress=False)
    history = trainer.fit(Batches(_images(20_000, "cuda"), 64))
    assert trainer.cuda_graph_used
    for record in history:
        variance = record["train/eps_sq"] - record["train/eps"] ** 2
        assert 0.6 < variance < 1.4, record          # 5 standard errors either side of 1


class _ReadsBack(VAE):
    """A model whose step reads a value back to the host (as a user's logging might): not capturable."""

    def loss(self, x):
        scale = 1.0 + 0.0 * x.mean().item()
        loss, terms = super().loss(x)
        return scale * loss, terms


@cuda
def test_a_step_that_reads_back_falls_back_to_eager_steps_on_cuda():
    """The probe before the capture (sync debug mode "error") catches the read, retrains that batch
    eagerly and warns; the run is then the eager run, step for step."""
    def fit(graph):
        trainer = Trainer.build(lambda: _ReadsBack(SMALL), TrainConfig(epochs=2, device="cuda", cuda_graph=graph),
                                progress=False)
        return trainer, trainer.fit(Batches(_images(1000, "cuda"), 64, shuffle=True, binarize=True))

    with pytest.warns(RuntimeWarning, match="reads a value back"):
        probed, probed_history = fit(True)
    _, eager_history = fit(False)
    assert not probed.cuda_graph_used
    for a, b in zip(probed_history, eager_history):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-6)


@cuda
def test_resume_on_cuda_on_both_paths(tmp_path):
    _, straight = _fit(device="cuda", epochs=3, n=1000)
    _fit(device="cuda", epochs=2, n=1000, run_dir=tmp_path / "graph")
    trainer, resumed = _fit(device="cuda", epochs=3, n=1000, run_dir=tmp_path / "graph")
    _fit(device="cuda", epochs=2, n=1000, run_dir=tmp_path / "mixed", graph=False)
    _, mixed = _fit(device="cuda", epochs=3, n=1000, run_dir=tmp_path / "mixed")
    assert trainer.cuda_graph_used
    for a, b, c in zip(straight, resumed, mixed):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a["train/loss"] == pytest.approx(c["train/loss"], rel=1e-4)


@cuda
def test_the_flow_and_the_iwae_objective_are_captured_on_cuda():
    """The flow's dequantization check reads back to the host, which a capture forbids: it must skip
    itself while capturing (``likelihoods.can_read_values``), or the run falls back to eager steps."""
    images = _images(512, "cuda")
    flow = Trainer.build(lambda: RealNVP(FlowConfig(blocks=1, hidden=8)),
                         TrainConfig(epochs=1, device="cuda"), progress=False)
    history = flow.fit(Batches(images, 64, shuffle=True))
    assert flow.cuda_graph_used and torch.isfinite(torch.tensor(history[0]["train/loss"]))
    iwae, history = _fit(dataclasses.replace(SMALL, train_iwae_k=5), device="cuda", epochs=1, n=512)
    assert iwae.cuda_graph_used and torch.isfinite(torch.tensor(history[0]["train/iwae"]))
    # a fixed-sigma Gaussian on grey levels: its log sigma is filled on the device, not copied there
    gaussian = VAEConfig(latent_dim=4, hidden=(32,), likelihood="gaussian", likelihood_options={"sigma": 0.1})
    trainer = Trainer.build(lambda: VAE(gaussian), TrainConfig(epochs=1, device="cuda"), progress=False)
    trainer.fit(Batches(images, 64, shuffle=True))
    assert trainer.cuda_graph_used


# -- the learning-rate decay (TrainConfig.lr_decay), which a graph must read from the device --------

def _fit_decay(*, rehearse=False, epochs=3, run_dir=None, device="cpu", graph=True, decay=0.5):
    config = TrainConfig(epochs=epochs, device=device, cuda_graph=graph, lr_decay=decay)
    trainer = Trainer.build(lambda: VAE(SMALL), config, run_dir=run_dir, progress=False)
    trainer._rehearse_graph = rehearse
    return trainer, trainer.fit(Batches(_images(300, device), 64, shuffle=True, binarize=True))


def test_the_learning_rate_decays_per_epoch_on_both_paths(tmp_path):
    """Epoch e trains with lr * gamma ** (e - 1). A graph would keep the rate it was captured with,
    so on the graph path the rate is a tensor updated in place: the rehearsal, which reads it as
    the graph does, must follow the eager path's curve (to float32 rounding of the rate), and a run
    resumed after epoch 2 must continue with the third epoch's rate."""
    eager, eager_history = _fit_decay()
    rehearsed, rehearsed_history = _fit_decay(rehearse=True)
    assert eager.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** 2)
    assert float(rehearsed.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-3 * 0.5 ** 2)
    for a, b in zip(_train_terms(eager_history), _train_terms(rehearsed_history)):
        assert a == pytest.approx(b, rel=1e-5)
    constant = _fit(epochs=3)[1]
    assert eager_history[0]["train/loss"] == constant[0]["train/loss"]          # epoch 1: the same rate
    assert abs(eager_history[2]["train/loss"] - constant[2]["train/loss"]) > 1e-3   # then slower
    _fit_decay(rehearse=True, epochs=2, run_dir=tmp_path)
    _, resumed = _fit_decay(epochs=3, run_dir=tmp_path, graph=False)
    for a, b in zip(_train_terms(eager_history), _train_terms(resumed)):
        assert a == pytest.approx(b, rel=1e-5)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=1.5)


@cuda
def test_the_learning_rate_decay_reaches_the_graph_on_cuda():
    graph, graph_history = _fit_decay(device="cuda")
    eager, eager_history = _fit_decay(device="cuda", graph=False)
    assert graph.cuda_graph_used
    for g, e in zip(graph_history, eager_history):
        assert g["train/loss"] == pytest.approx(e["train/loss"], rel=1e-4)
