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

from .likelihoods import LIKELIHOODS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m companion", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write a run directory")
    models = train.add_subparsers(dest="model", required=True)
    vae = models.add_parser("vae", help="a VAE (MLP or convolutional)", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Train a VAE; writes config.json, history.json, checkpoint.pt, "
                                        "metrics.json (test_elbo in nats per example) and PNG grids to --out.")
    vae.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    vae.add_argument("--latent-dim", type=int, default=20, help="size of z")
    vae.add_argument("--hidden", type=int, nargs="+", default=[400],
                     help="hidden widths of the encoder (decoder mirrors); for --architecture conv, the channels")
    vae.add_argument("--architecture", choices=["mlp", "conv"], default="mlp",
                     help="fully connected, or convolutions with batch norm (PyTorch-VAE layout)")
    vae.add_argument("--reduction", choices=["sum", "mean"], default="sum",
                     help="sum the reconstruction term over pixels (the ELBO) or average it (beta times D)")
    vae.add_argument("--likelihood", choices=sorted(LIKELIHOODS), default="bernoulli")
    vae.add_argument("--sigma", type=float, default=None,
                     help="sigma of the gaussian likelihood, or the initial sigma of gaussian-learned (data in [0, 1])")
    vae.add_argument("--beta", type=float, default=1.0, help="weight of the KL term in the loss")
    vae.add_argument("--free-bits", type=float, default=0.0,
                     help="nats per latent dimension charged at least (Kingma et al., 2016); 0 for the plain loss")
    vae.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=True,
                     help="dynamic binarisation of the pixels (the MNIST likelihood protocol)")
    vae.add_argument("--epochs", type=int, default=10)
    vae.add_argument("--batch-size", type=int, default=128)
    vae.add_argument("--lr", type=float, default=1e-3)
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    vae.add_argument("--data-root", default=None, help="dataset root in torchvision's layout (default: $COMPANION_DATA, then the cache)")
    vae.add_argument("--out", required=True, help="run directory")
    vae.add_argument("--no-resume", dest="resume", action="store_false", help="ignore a checkpoint in --out")
    vae.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")

    rep = commands.add_parser("reproduce", help="run a named full-scale experiment into book/results/NAME",
                              description="Train and evaluate a registered experiment (--list shows them); writes "
                                          "metrics.json, history.json, config.json and PNG figures to book/results/NAME.")
    rep.add_argument("name", nargs="*", help="experiments to run, in order: names or globs such as 'sweep-*'")
    rep.add_argument("--list", action="store_true", help="list the registered experiments and exit")
    rep.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    rep.add_argument("--data-root", default=None)
    rep.add_argument("--results", default=None, help="results root (default: book/results)")
    rep.add_argument("--epochs", type=int, default=None, help="override the registered epochs (smoke tests)")
    rep.add_argument("--iwae-k", type=int, default=None, help="override the registered k (smoke tests)")
    rep.add_argument("--max-latents", type=int, default=None,
                     help="latents decoded at once in the IWAE evaluation (default: the experiment's; more on a GPU)")
    rep.add_argument("--no-progress", dest="progress", action="store_false")

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
    data.add_argument("--data-root", default=None)
    data.add_argument("--dataset", choices=["mnist", "fashion-mnist"], nargs="*", default=["mnist", "fashion-mnist"])
    data.add_argument("--no-download", dest="download", action="store_false", help="do not try torchvision's download")
    return parser


def _train_vae(args) -> int:
    from .models.vae import VAEConfig
    from .runs import VAERun, run_vae
    from .training import TrainConfig

    options = {} if args.sigma is None else {"sigma": args.sigma}
    run = VAERun(
        dataset=args.dataset,
        binarize=args.binarize,
        batch_size=args.batch_size,
        model=VAEConfig(latent_dim=args.latent_dim, hidden=tuple(args.hidden), likelihood=args.likelihood,
                        likelihood_options=options, beta=args.beta, architecture=args.architecture,
                        reduction=args.reduction, free_bits=args.free_bits),
        train=TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device),
    )
    m = run_vae(run, args.out, data_root=args.data_root, resume=args.resume, progress=args.progress)
    print(f"data: {m['data_source']}")
    print(f"{m['model']} on {m['dataset']} ({'binarised' if m['binarized'] else 'grey levels'}), "
          f"{m['epochs']} epochs on {m['device']} in {m['wall_time_s']:.1f} s")
    print(f"test ELBO {m['test_elbo']:.2f} nats per image "
          f"(reconstruction {m['test_reconstruction']:.2f}, KL {m['test_kl']:.2f})")
    print(f"wrote {args.out}/metrics.json and figures")
    return 0


def _reproduce(args) -> int:
    from .reproduce import describe, matching, reproduce, results_dir

    if args.list or not args.name:
        print(describe())
        return 0
    for name in matching(args.name):
        m = reproduce(name, args.results, device=args.device, data_root=args.data_root, epochs=args.epochs,
                      iwae_k=args.iwae_k, max_latents=args.max_latents, progress=args.progress)
        print(f"{name}: {m['epochs']} epochs on {m['device']} in {m['wall_time_s']:.1f} s")
        if "test_accuracy" in m:
            print(f"test accuracy {m['test_accuracy']:.4f}")
        if "diverged" in m:
            print(f"diverged: {m['diverged']}")
        if "test_elbo" in m:
            print(f"test ELBO {m['test_elbo']:.2f} nats; {m['active_units']} active units")
        if m.get("kind") == "flow":
            print(f"test NLL (exact, one dequantization) {m['test_nll_nats']:.2f} nats = {m['test_bits_per_dim']:.4f} bits/dim")
        elif "test_nll_nats" in m:
            print(f"test NLL (IWAE, k = {m['iwae_k']}) {m['test_nll_nats']:.2f} nats "
                  f"= {m['test_bits_per_dim']:.4f} bits/dim; evaluation {m['iwae_wall_time_s']:.1f} s, "
                  f"peak memory {m['iwae_peak_memory_mb']:.0f} MB ({m['iwae_memory_kind']})")
        if "frechet" in m:
            print(f"classifier Frechet distance of the samples {m['frechet']:.2f}")
        if "frechet_mean" in m:
            print(f"classifier Frechet distance {m['frechet_mean']:.2f} (means), {m['frechet_params']:.2f} (parameters)")
        print(f"wrote {results_dir(name, args.results)}")
    return 0


def _data(args) -> int:
    from .data import DataNotFoundError, cache_dir, locate

    print(f"cache: {cache_dir()}")
    status = 0
    for name in args.dataset:
        try:
            found = locate(name, args.data_root, download=args.download)
            print(f"{name}: found at {found.source}")
        except DataNotFoundError as error:
            print(f"{name}: NOT FOUND\n{error}")
            status = 1
    return status


def _assignments(args) -> int:
    from . import assignments

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
        return 0
    out = assignments.student_book(args.out, repository=args.repository, branch=args.branch, html=args.html)
    print(f"wrote the student edition to {out}" + (f" (HTML in {out}/_build/html)" if args.html else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (errors in the input print a message and return 2)."""
    from .assignments import VerificationError
    from .data import DataNotFoundError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train_vae(args)
        if args.command == "assignments":
            return _assignments(args)
        if args.command == "reproduce":
            return _reproduce(args)
        return _data(args)
    except (DataNotFoundError, ValueError, TypeError, KeyError, VerificationError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) and error.args else error}", file=sys.stderr)
        return 2
