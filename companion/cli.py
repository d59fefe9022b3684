"""Command line: ``python -m companion {train,reproduce,assignments,data} ...``.

    python -m companion train vae --dataset mnist --latent-dim 20 --epochs 10 --out runs/mnist-z20
    python -m companion reproduce --list
    python -m companion reproduce vae-mlp-mnist
    python -m companion data --data-root ../shared/data
    python -m companion assignments build --out assignments

See: appendix "Running the course".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .likelihoods import LIKELIHOODS, likelihood_options

SIGMA_LIKELIHOODS = tuple(name for name in sorted(LIKELIHOODS) if "sigma" in likelihood_options(name))
DATA_ROOT_HELP = "dataset root in torchvision's layout (default: $COMPANION_DATA, then the per-user cache)"

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m companion", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write a run directory")
    models = train.add_subparsers(dest="model", required=True)
    vae = models.add_parser("vae", help="a VAE (MLP or convolutional)",
                            description="Train a VAE; writes config.json, history.json, checkpoint.pt, "
                                        "metrics.json (test_elbo in nats per example) and PNG grids to --out. "
                                        "An interrupted run resumes from its last finished epoch when the same "
                                        "command is run again.")
    vae.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist", help="default: %(default)s")
    vae.add_argument("--latent-dim", type=int, default=20, help="size of z (default: %(default)s)")
    vae.add_argument("--hidden", type=int, nargs="+", default=[400],
                     help="hidden widths of the encoder (the decoder mirrors them); for --architecture conv, "
                          "the channels (default: 400)")
    vae.add_argument("--architecture", choices=["mlp", "conv"], default="mlp",
                     help="fully connected, or convolutions with batch norm (PyTorch-VAE layout); default: %(default)s")
    vae.add_argument("--reduction", choices=["sum", "mean"], default="sum",
                     help="sum the reconstruction term over pixels (the ELBO) or average it (beta times D); "
                          "default: %(default)s")
    vae.add_argument("--likelihood", choices=sorted(LIKELIHOODS), default="bernoulli", metavar="LIKELIHOOD",
                     help=f"the decoder's p(x|z), one of {', '.join(sorted(LIKELIHOODS))} (default: %(default)s)")
    vae.add_argument("--sigma", type=float, default=None,
                     help=f"for {', '.join(SIGMA_LIKELIHOODS)} only: sigma of the gaussian likelihood, or the initial "
                          "sigma of the learned ones, in pixel units (data in [0, 1]); default: the likelihood's own")
    vae.add_argument("--beta", type=float, default=1.0, help="weight of the KL term in the loss (default: %(default)s)")
    vae.add_argument("--free-bits", type=float, default=0.0,
                     help="nats per latent dimension charged at least (Kingma et al., 2016); 0, the default, "
                          "for the plain loss")
    vae.add_argument("--train-iwae-k", type=int, default=1, metavar="K",
                     help="train on the IWAE bound with K samples per image (Burda et al., 2016); 1, the default, "
                          "trains the ELBO. Needs --beta 1, no free bits and --reduction sum")
    vae.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=True,
                     help="dynamic binarisation of the pixels, the MNIST likelihood protocol (default: on)")
    vae.add_argument("--epochs", type=int, default=10,
                     help="passes over the 50,000 training images (default: %(default)s)")
    vae.add_argument("--batch-size", type=int, default=128, help="images per step (default: %(default)s)")
    vae.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default: %(default)s)")
    vae.add_argument("--lr-decay", type=float, default=1.0, metavar="GAMMA",
                     help="multiply the learning rate by GAMMA after each epoch (default: 1, constant); "
                          "10 ** (-1 / epochs) lowers it tenfold over the run, as Burda et al. (2016) did")
    vae.add_argument("--seed", type=int, default=0,
                     help="seeds the weights, shuffling, binarisation and noise (default: %(default)s)")
    vae.add_argument("--device", default="auto",
                     help="auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:1, mps")
    vae.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                     help="on CUDA, run every training step eagerly instead of replaying it as a CUDA graph "
                          "(the default where the model allows; no effect on the CPU or MPS)")
    vae.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    vae.add_argument("--out", required=True,
                     help="the run directory (required; created if missing; not inside book/results, which only "
                          "`reproduce` writes)")
    vae.add_argument("--no-resume", dest="resume", action="store_false",
                     help="start afresh, replacing a checkpoint in --out (by default an interrupted run in "
                          "--out is resumed, and a run with other settings is refused)")
    vae.add_argument("--no-progress", dest="progress", action="store_false",
                     help="hide the progress bar (shown by default)")

    rep = commands.add_parser("reproduce", help="run a named full-scale experiment into book/results/NAME",
                              description="Train and evaluate a registered experiment (--list shows them); writes "
                                          "metrics.json, history.json, config.json and PNG figures to book/results/NAME "
                                          "once the run is complete (it trains in NAME.partial, and resumes there if "
                                          "interrupted). A run whose --epochs or --iwae-k differ from the registered "
                                          "values is a smoke test: it is recorded as not registered and never written "
                                          "into book/results.")
    rep.add_argument("name", nargs="*", help="experiments to run, in order: names or globs such as 'sweep-*'")
    rep.add_argument("--list", action="store_true", help="list the registered experiments and exit")
    rep.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU; the default), cpu, cuda, ...")
    rep.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    rep.add_argument("--results", default=None,
                     help="results root (default: book/results; runs/reproduce for runs with --epochs or --iwae-k)")
    rep.add_argument("--epochs", type=int, default=None,
                     help="override the registered epochs, for smoke tests (0: evaluate the untrained model)")
    rep.add_argument("--iwae-k", type=int, default=None,
                     help="override the registered k, for smoke tests (ignored by runs without an IWAE evaluation)")
    rep.add_argument("--max-latents", type=int, default=None,
                     help="latents decoded at once in the IWAE evaluation (default: the experiment's; more on a GPU)")
    rep.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                     help="on CUDA, run the training steps eagerly instead of as a CUDA graph (same registered run)")
    rep.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")

    assign = commands.add_parser("assignments", help="student versions, autograder material and grading")
    acts = assign.add_subparsers(dest="action", required=True)
    build = acts.add_parser("build", help="student, autograder and instructor notebooks for chapters with exercises")
    build.add_argument("chapters", nargs="*", help="chapter names or number prefixes (default: all), e.g. 06 08_training_a_vae")
    build.add_argument("--out", required=True)
    build.add_argument("--no-verify", dest="verify", action="store_false",
                       help="skip running the checks on the reference and the student version")
    grade = acts.add_parser("grade", help="grade a submitted notebook with the autograder's checks")
    grade.add_argument("submission")
    grade.add_argument("--autograder", required=True, help="the chapter's notebook in OUT/autograder/")
    grade.add_argument("--json", default=None, help="also write the results here")
    book = acts.add_parser("book", help="a student edition of the whole book (no solutions in HTML, .ipynb or Binder)")
    book.add_argument("--out", required=True)
    book.add_argument("--repository", default=None, help="URL of the student repository (Binder buttons)")
    book.add_argument("--branch", default=None, help="its branch")
    book.add_argument("--no-html", dest="html", action="store_false", help="write the tree without building HTML")

    data = commands.add_parser("data", help="report where each dataset is found (or why not)")
    data.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    data.add_argument("--dataset", choices=["mnist", "fashion-mnist"], nargs="*", default=["mnist", "fashion-mnist"],
                      help="which datasets to look for (default: both)")
    data.add_argument("--no-download", dest="download", action="store_false", help="do not try torchvision's download")
    return parser


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _train_vae(args) -> int:
    from .models.vae import VAEConfig
    from .paths import RESULTS
    from .runs import VAERun, run_vae
    from .training import TrainConfig

    out = Path(args.out).resolve()
    if out == RESULTS.resolve() or RESULTS.resolve() in out.parents:
        raise ValueError(f"--out {args.out} is inside {RESULTS}, which holds the recorded results and is written only "
                         "by `python -m companion reproduce`; choose another directory, e.g. runs/NAME")
    options = {} if args.sigma is None else {"sigma": args.sigma}
    run = VAERun(
        dataset=args.dataset,
        binarize=args.binarize,
        batch_size=args.batch_size,
        model=VAEConfig(latent_dim=args.latent_dim, hidden=tuple(args.hidden), likelihood=args.likelihood,
                        likelihood_options=options, beta=args.beta, architecture=args.architecture,
                        reduction=args.reduction, free_bits=args.free_bits, train_iwae_k=args.train_iwae_k),
        train=TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device,
                          lr_decay=args.lr_decay, cuda_graph=args.cuda_graph),
    )
    m = run_vae(run, args.out, data_root=args.data_root, resume=args.resume, progress=args.progress)
    print(f"data: {m['data_source']}")
    print(f"{m['model']} on {m['dataset']} ({'binarised' if m['binarized'] else 'grey levels'}), "
          f"{_epochs(m['epochs'])} on {m['device']}{' (CUDA graph)' if m['cuda_graph'] else ''} "
          f"in {m['wall_time_s']:.1f} s")
    print(f"test ELBO {m['test_elbo']:.2f} nats per image "
          f"(reconstruction {m['test_reconstruction']:.2f}, KL {m['test_kl']:.2f})")
    print(f"wrote {args.out}/metrics.json and figures")
    return 0


def _reproduce(args) -> int:
    from .reproduce import REGISTRY, describe, is_registered, matching, reproduce, results_dir, results_root

    if args.list or not args.name:
        print(describe())
        return 0
    for name in matching(args.name):
        registered = is_registered(name, args.epochs, args.iwae_k)
        where = results_dir(name, results_root(args.results, registered))
        if REGISTRY[name].run is None:                 # a classifier: no checkpoint, it starts again
            args.interrupted = f"{where} is unchanged; rerun the same command to train it again"
        else:
            args.interrupted = (f"{where}.partial keeps the last finished epoch and {where} is unchanged; rerun "
                                "the same command to resume")
        m = reproduce(name, args.results, device=args.device, data_root=args.data_root, epochs=args.epochs,
                      iwae_k=args.iwae_k, max_latents=args.max_latents, progress=args.progress,
                      cuda_graph=args.cuda_graph)
        print(f"{name}: {_epochs(m['epochs'])} on {m['device']} in {m['wall_time_s']:.1f} s")
        if "test_accuracy" in m:
            print(f"test accuracy {m['test_accuracy']:.4f}")
        if "diverged" in m:
            print(f"diverged: {m['diverged']}")
        if "test_elbo" in m:
            print(f"test ELBO {m['test_elbo']:.2f} nats; {m['active_units']} active units")
        if m.get("kind") == "flow":
            print(f"test NLL (exact, one dequantization) {m['test_nll_nats']:.2f} nats = {m['test_bits_per_dim']:.4f} bits/dim")
        elif "test_nll_nats" in m:
            memory = m["iwae_peak_memory_mb"]
            print(f"test NLL (IWAE, k = {m['iwae_k']}) {m['test_nll_nats']:.2f} nats "
                  f"= {m['test_bits_per_dim']:.4f} bits/dim; evaluation {m['iwae_wall_time_s']:.1f} s, peak memory "
                  + (f"{memory:.0f} MB ({m['iwae_memory_kind']})" if memory is not None else m["iwae_memory_kind"]))
        if "frechet" in m:
            print(f"classifier Frechet distance of the samples {m['frechet']:.2f}")
        if "frechet_mean" in m:
            print(f"classifier Frechet distance {m['frechet_mean']:.2f} (means), {m['frechet_params']:.2f} (parameters)")
        smoke = " (overridden settings: a smoke test, recorded as not registered)"
        print(f"wrote {where}" + ("" if registered else smoke))
    return 0


def _data(args) -> int:
    from .data import CorruptDataError, DataNotFoundError, cache_dir, locate

    print(f"cache: {cache_dir()}")
    status = 0
    for name in args.dataset:
        try:
            found = locate(name, args.data_root, download=args.download)
            print(f"{name}: found at {found.source}")
        except CorruptDataError as error:
            print(f"{name}: DAMAGED\n{error}")
            status = 1
        except DataNotFoundError as error:
            print(f"{name}: NOT FOUND\n{error}")
            status = 1
    return status


def _assignments(args) -> int:
    try:
        from . import assignments

        try:
            return _assignment_action(assignments, args)
        except assignments.VerificationError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    except ModuleNotFoundError as error:
        extras = "instructor,book" if args.action == "book" else "instructor"   # the student book is built too
        print(f"error: this command needs a package that is not installed ({error}); install what it needs with: "
              f"pip install -e '.[{extras}]'", file=sys.stderr)
        return 2


def _assignment_action(assignments, args) -> int:
    if args.action == "build":
        summary = assignments.build(args.chapters or None, args.out, verify=args.verify)
        print(f"wrote {args.out}/student, {args.out}/autograder, {args.out}/instructor for {len(summary)} chapters")
        return 0
    if args.action == "grade":
        results = assignments.grade(args.submission, args.autograder)
        for r in results:
            print(f"{'PASS' if r.passed else 'FAIL'} {r.grade_id:32} {r.earned:g}/{r.points:g}" + (f"  {r.error}" if r.error else ""))
        total, earned = sum(r.points for r in results), sum(r.earned for r in results)
        print(f"score: {earned:g} / {total:g}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"score": earned, "total": total, "checks": [vars(r) for r in results]}, f, indent=2)
        return 0 if results and all(r.passed for r in results) else 1
    out = assignments.student_book(args.out, repository=args.repository, branch=args.branch, html=args.html)
    print(f"wrote the student edition to {out}" + (f" (HTML in {out}/_build/html)" if args.html else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    0: done. 1: the work failed (training diverged, a run directory is in use, the training step
    could not be captured as a CUDA graph, a graded submission
    failed a check, a dataset is missing or damaged for ``data``). 2: bad input (the message says
    what to change). 130: interrupted by Ctrl-C (the message says how to resume). Errors are
    printed as one message, not a traceback.
    """
    from .data import DataNotFoundError
    from .locks import RunInUseError
    from .training import CudaGraphError

    args = build_parser().parse_args(argv)
    args.interrupted = {
        "train": f"{getattr(args, 'out', '')} keeps the last finished epoch; rerun the same command to resume from it "
                 "(or add --no-resume to start afresh)",
        "reproduce": "rerun the same command",                       # made precise per experiment in _reproduce
        "data": "an extraction in progress leaves no file behind; rerun the same command",
        "assignments": "files written so far may be incomplete; rerun the same command",
    }[args.command]
    commands = {"train": _train_vae, "assignments": _assignments, "reproduce": _reproduce, "data": _data}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.interrupted}", file=sys.stderr)
        return 130
    except FloatingPointError as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        return 1
    except (RunInUseError, CudaGraphError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (DataNotFoundError, ValueError, TypeError, KeyError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) and error.args else error}", file=sys.stderr)
        return 2
