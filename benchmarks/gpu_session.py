"""Every GPU figure of issue 16 in one run, sized for about 9 minutes on one H100 or H200.

On the lent GPU machine (its python3 has torch, torchvision, sympy, matplotlib, scipy and tqdm), with
MNIST and Fashion-MNIST copied into a folder that git ignores and carried there:

    PYTHONPATH=. python3 benchmarks/gpu_session.py --data-root .device-data --out "$OUT"

(for this project's device tool: ``mkdir .device-data``, copy ``../shared/data/MNIST`` and
``../shared/data/FashionMNIST`` into it, 41 MB, list ``.device-data/`` in ``.git/info/exclude``, and
run the line above with ``carry=[".device-data"]`` and ``timeout_s=600``.)

Here, to check the script itself (every stage, tiny, on the CPU; nothing is written to book/results):

    python benchmarks/gpu_session.py --smoke --device cpu --out /tmp/gpu-smoke

Stages, in order; each prints its figures when it ends (``--only`` picks some):

1. ``pipeline``: ``bench_data_pipeline.py`` (the DataLoader loop of pytorch/examples/vae against the
   companion's batches and trainer, 3 epochs of Fashion-MNIST). Target: at least 25x at equal test
   loss (within 1%).
2. ``cli``: ``python -m companion train vae`` (784-400-20, 50 epochs) as a user runs it, timed from
   the shell: start-up, data, training, evaluation and figures. Target: at most 10 s.
3. ``steps``: the same step at batch 128 four ways: eager with fused Adam, ``torch.compile``
   (default mode), ``torch.compile(mode="reduce-overhead")`` (CUDA graphs of the compiled forward
   and backward) and the trainer's whole-step CUDA graph; seconds per epoch after the first
   (compilation and capture are reported apart) and the test loss each reaches.
4. ``table``: the issue's rows ``reproduce vae-mlp-mnist`` (120 epochs, IWAE k = 5000) and one epoch
   of ``h2h-flow-mnist``, into a scratch folder (book/results keeps its recordings).
5. ``reproduce``: the ``gpu-*`` experiments of ``companion.reproduce.GPU_SCALE`` in the order of
   ``PRIORITY``, then their seeds 1 and 2, each started only if its estimated time fits in what is
   left of ``--budget-s``. As soon as a run is recorded, its folder (all but the checkpoint) joins
   ``--out/results.tar.gz``, so a session stopped by the machine's time limit keeps what finished.
   (The device tool brings back at most 8 files of 16 MiB: one archive and ``summary.json``, not a
   folder of files per run; ``tar xzf results.tar.gz -C book/results`` records them.)

Everything measured goes to ``--out/summary.json`` as well, rewritten after every stage and run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data_pipeline as pipeline  # noqa: E402  (the benchmark beside this script)

from companion.data import Batches, load_dataset  # noqa: E402
from companion.models import VAE, VAEConfig  # noqa: E402
from companion.paths import REPO  # noqa: E402
from companion.reproduce import GPU_SCALE, reproduce, results_dir  # noqa: E402
from companion.training import Trainer, TrainConfig, evaluate, resolve_device  # noqa: E402

#: Seed-0 runs first, most wanted first; then seeds 1 and 2 in the same order.
PRIORITY = ("gpu-vae-mlp-mnist", "gpu-iwae5-mlp-mnist", "gpu-h2h-flow-mnist", "gpu-h2h-vae-mnist",
            "gpu-h2h-gan-mnist", "gpu-iwae50-mlp-mnist")
#: Estimated seconds on one H200 with the CUDA-graph step, from the issue's measurements (0.128 s per
#: epoch for 784-400-20; 170 s for 880 epochs of 784-500-500-50, to which the trainer adds about
#: 0.03 s per epoch for its checkpoint, 16 MB, and validation); the script prints the measured time
#: beside each estimate. The flow's is replaced by one measured in the ``table`` stage (see
#: ``flow_estimate``); without it, 100 epochs at the issue's 9.2 s (eager) never fit a session.
#: ``--estimate NAME=SECONDS`` replaces any of them (with a figure an earlier session measured).
ESTIMATE_S = {"gpu-vae-mlp-mnist": 260, "gpu-iwae5-mlp-mnist": 150, "gpu-h2h-flow-mnist": 100 * 9.2,
              "gpu-h2h-vae-mnist": 40, "gpu-h2h-gan-mnist": 200, "gpu-iwae50-mlp-mnist": 200}
#: Files of a result folder that stay behind (the checkpoint is 16 MB and more; book/results ignores both).
LEFT_BEHIND = ("checkpoint.pt", "train_signature.json", "*.tmp")
STEP_CONFIG = VAEConfig(latent_dim=20, hidden=(400,))


def stage_pipeline(args, device) -> dict:
    bench = SimpleNamespace(epochs=args.pipeline_epochs, data_root=args.data_root, seed=0, precision="fp32")
    torch.manual_seed(0)
    init = VAE(pipeline.CONFIG).state_dict()
    slow, slow_loss = pipeline.dataloader_pipeline(bench, device, init)
    fast, fast_loss = pipeline.companion_pipeline(bench, device, init)
    feeding = pipeline.data_only(bench, device)
    out = {"dataloader_s_per_epoch": slow / bench.epochs, "dataloader_test_loss": slow_loss,
           "companion_s_per_epoch": fast / bench.epochs, "companion_test_loss": fast_loss,
           "speedup": slow / fast, "loss_difference_percent": 100 * abs(fast_loss - slow_loss) / slow_loss,
           "batches_alone_s": feeding}
    print(f"pipeline: DataLoader {out['dataloader_s_per_epoch']:.2f} s/epoch (test loss {slow_loss:.2f}), companion "
          f"{out['companion_s_per_epoch']:.3f} s/epoch ({fast_loss:.2f}): {out['speedup']:.1f}x, losses "
          f"{out['loss_difference_percent']:.2f}% apart; batches alone {feeding}")
    return out


def stage_cli(args, device) -> dict:
    epochs = 1 if args.smoke else 50
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "companion", "train", "vae", "--epochs", str(epochs), "--out",
                   str(Path(scratch) / "run"), "--device", str(device), "--no-progress"]
        if args.data_root:
            command += ["--data-root", str(args.data_root)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        metrics = json.loads((Path(scratch) / "run" / "metrics.json").read_text()) if done.returncode == 0 else {}
    if done.returncode != 0:
        print(f"cli: failed ({done.returncode}): {done.stderr[-2000:]}")
        return {"returncode": done.returncode, "stderr": done.stderr[-2000:]}
    out = {"epochs": epochs, "wall_s": wall, "training_s": metrics["wall_time_s"], "test_elbo": metrics["test_elbo"],
           "cuda_graph": metrics.get("cuda_graph")}
    print(f"cli: train vae 784-400-20, {epochs} epochs: {wall:.1f} s wall ({metrics['wall_time_s']:.1f} s training, "
          f"CUDA graph {metrics.get('cuda_graph')}), test ELBO {metrics['test_elbo']:.2f}")
    return out


def _time_compiled(model, train, test, epochs, device, mode) -> tuple[list[float], float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))
    loss_fn = torch.compile(model.loss, mode=mode)
    times = []
    for _ in range(epochs):
        pipeline._sync(device)
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        for x in train:
            if mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            loss, _ = loss_fn(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        pipeline._sync(device)
        times.append(time.perf_counter() - start)
    return times, evaluate(model, test)["loss"]


def stage_steps(args, device) -> dict:
    data = load_dataset("mnist", args.data_root, device=device)
    epochs = 2 if args.smoke else args.step_epochs
    train, test = Batches(data.train, 128, shuffle=True, binarize=True), Batches(data.test, 1000, binarize=True)
    out = {}
    for name in ("eager", "compile", "reduce-overhead", "cuda-graph"):
        torch.manual_seed(0)
        model = VAE(STEP_CONFIG).to(device)
        try:
            if name in ("eager", "cuda-graph"):
                trainer = Trainer(model, TrainConfig(epochs=epochs, device=str(device), cuda_graph=name == "cuda-graph"),
                                  progress=False)
                times = [record["time_s"] for record in trainer.fit(train)]
                loss = evaluate(trainer.model, test)["loss"]
                used = trainer.cuda_graph_used
            else:
                times, loss = _time_compiled(model, train, test, epochs, device, None if name == "compile" else name)
                used = None
        except Exception as error:     # e.g. no C compiler or Triton for torch.compile
            out[name] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"}
            print(f"steps: {name}: failed: {out[name]['error']}")
            continue
        steady = sum(times[1:]) / max(len(times) - 1, 1)
        out[name] = {"first_epoch_s": times[0], "s_per_epoch": steady, "test_loss": loss, "cuda_graph": used}
        print(f"steps: {name:16} first epoch {times[0]:6.2f} s, then {steady:.3f} s/epoch; test loss {loss:.2f}")
    return out


def stage_table(args, device) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        rows = [("vae-mlp-mnist", 1 if args.smoke else None, 2 if args.smoke else None), ("h2h-flow-mnist", 1, None)]
        for name, epochs, k in rows[:1] if args.smoke else rows:       # a flow epoch takes minutes on a CPU
            start = time.perf_counter()
            m = reproduce(name, scratch, device=str(device), data_root=args.data_root, epochs=epochs, iwae_k=k,
                          progress=False)
            out[name] = {"wall_s": time.perf_counter() - start, "training_s": m["wall_time_s"],
                         "epochs": m["epochs"], "evaluation_s": m.get("iwae_wall_time_s"),
                         "test_nll_nats": m.get("test_nll_nats"), "test_bits_per_dim": m.get("test_bits_per_dim"),
                         "cuda_graph": m.get("cuda_graph")}
            print(f"table: reproduce {name} ({m['epochs']} epochs): {m['wall_time_s']:.1f} s training, "
                  f"evaluation {m.get('iwae_wall_time_s')}, NLL {m.get('test_nll_nats')}")
    return out


def flow_estimate(table: dict | None) -> float | None:
    """Seconds for ``gpu-h2h-flow-mnist`` from the ``table`` stage's one epoch of h2h-flow-mnist (the
    same network): 100 epochs, plus that run's evaluation once more. None without it."""
    row = (table or {}).get("h2h-flow-mnist")
    if not row or "training_s" not in row:
        return None
    return 100 * row["training_s"] / row["epochs"] + (row["wall_s"] - row["training_s"])


def pack_results(folders: list[Path], archive: Path) -> None:
    """Write ``archive`` (a .tar.gz of ``folders``, each under its own name, without LEFT_BEHIND)
    beside itself first and then rename it, so that a kill half-way keeps the previous archive."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for folder in folders:
            for file in sorted(folder.iterdir()):
                if file.is_file() and not any(fnmatch.fnmatch(file.name, p) for p in LEFT_BEHIND):
                    tar.add(file, arcname=f"{folder.name}/{file.name}")
    os.replace(partial, archive)


def stage_reproduce(args, device, deadline: float, out: dict, save, estimates: dict) -> None:
    """Fills ``out`` run by run and calls ``save()`` after each, so that a session cut off by the
    machine's time limit keeps the figures of the runs that finished."""
    names = list(args.names or PRIORITY) + [f"{n}-seed{s}" for s in (1, 2) for n in (args.names or PRIORITY)]
    scratch = Path(tempfile.mkdtemp()) if args.smoke else None
    recorded: list[Path] = []
    for name in names:
        base = name.split("-seed")[0]
        left = deadline - time.perf_counter()
        if not args.smoke and estimates[base] > left:
            print(f"reproduce: {name} skipped: estimated {estimates[base]:.0f} s, {left:.0f} s left")
            out[name] = {"skipped": f"estimated {estimates[base]:.0f} s, {left:.0f} s left"}
            save()
            continue
        start = time.perf_counter()
        try:
            m = reproduce(name, scratch, device=str(device), data_root=args.data_root, progress=False,
                          epochs=1 if args.smoke else None, iwae_k=2 if args.smoke else None)
        except Exception as error:        # one failed run must not cost the session the others
            out[name] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"}
            print(f"reproduce: {name} failed: {out[name]['error']}", flush=True)
            save()
            continue
        wall = time.perf_counter() - start
        keep = ("epochs", "wall_time_s", "test_nll_nats", "test_bits_per_dim", "test_elbo", "frechet", "frechet_mean",
                "cuda_graph", "iwae_wall_time_s", "device")
        out[name] = {"wall_s": wall, "estimate_s": estimates[base], **{k: m.get(k) for k in keep}}
        print(f"reproduce: {name}: {wall:.0f} s (estimated {estimates[base]:.0f} s): " +
              ", ".join(f"{k} {m[k]:.4g}" for k in ("test_nll_nats", "test_bits_per_dim", "frechet", "frechet_mean")
                        if m.get(k)), flush=True)
        if args.out:
            recorded.append(results_dir(name, scratch))
            pack_results(recorded, Path(args.out) / "results.tar.gz")
        save()
        if args.smoke and len(out) >= 2:
            break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=os.environ.get("COMPANION_DATA"))
    parser.add_argument("--out", default=None, help="where summary.json and the recorded result folders go")
    parser.add_argument("--budget-s", type=float, default=540, help="seconds for the whole script (default 540)")
    parser.add_argument("--only", nargs="*", choices=["pipeline", "cli", "steps", "table", "reproduce"], default=None)
    parser.add_argument("--names", nargs="*", default=None, help="gpu-* experiments to run (default: PRIORITY)")
    parser.add_argument("--pipeline-epochs", type=int, default=3)
    parser.add_argument("--step-epochs", type=int, default=6)
    parser.add_argument("--estimate", nargs="*", default=[], metavar="NAME=SECONDS",
                        help="replace the estimated time of gpu-* experiments (e.g. measured by an earlier session)")
    parser.add_argument("--smoke", action="store_true", help="every stage, tiny: to check the script on a CPU")
    args = parser.parse_args()
    overrides = {}
    for item in args.estimate:
        name, _, seconds = item.partition("=")
        try:
            overrides[name] = float(seconds)
        except ValueError:
            parser.error(f"--estimate takes NAME=SECONDS, got {item!r}")
    if set(overrides) - set(ESTIMATE_S):
        parser.error(f"--estimate: not gpu-* experiments: {sorted(set(overrides) - set(ESTIMATE_S))}")
    if args.smoke:
        args.pipeline_epochs = 1
    unknown = set(args.names or ()) - set(GPU_SCALE)
    if unknown:
        parser.error(f"not gpu-* experiments: {sorted(unknown)}")
    start = time.perf_counter()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; budget {args.budget_s:.0f} s")
    summary = {"device": name, "torch": torch.__version__, "smoke": args.smoke}
    stages = args.only or ["pipeline", "cli", "steps", "table", "reproduce"]

    def save() -> None:
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    for stage in stages:
        t0 = time.perf_counter()
        try:                 # a device session is short: a failing stage is recorded, the next one runs
            if stage == "reproduce":
                estimates = dict(ESTIMATE_S)
                measured = flow_estimate(summary.get("table"))
                if measured is not None:
                    estimates["gpu-h2h-flow-mnist"] = measured
                estimates.update(overrides)
                summary["estimates_s"] = estimates
                summary[stage] = {}
                stage_reproduce(args, device, start + args.budget_s, summary[stage], save, estimates)
            else:
                summary[stage] = globals()[f"stage_{stage}"](args, device)
        except Exception as error:
            summary[stage] = {**summary.get(stage, {}),      # the runs of ``reproduce`` that finished stay
                              "error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"}
            print(f"{stage}: failed: {summary[stage]['error']}", flush=True)
        print(f"[{stage}: {time.perf_counter() - t0:.0f} s; {time.perf_counter() - start:.0f} s so far]", flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
