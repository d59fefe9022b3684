"""companion: the code behind the course "Variational autoencoders, from the ELBO to GANs and flows".

Modules, one per concept a chapter teaches:

- ``paths``: where the repository, the book and its recorded results are (imported by the modules
  that read or write results, so that none of them imports another for it);
- ``data``: MNIST and Fashion-MNIST as tensors on the training device, batches, binarisation;
- ``likelihoods``: decoder likelihoods p(x|z) behind one interface;
- ``divergences``: Gaussian KL divergences in closed form;
- ``models``: the VAE, the GAN and the RealNVP flow of Part IV;
- ``estimators``: score-function and pathwise gradient estimators;
- ``evaluation``: estimates of the evidence log p(x) (naive, importance-sampled, grid), the batched
  IWAE test NLL, bits per dimension, the ELBO on any split;
- ``training``: a model-agnostic trainer with checkpoints and history;
- ``runs``: a VAE, GAN or flow run from configuration to run directory (what the command line calls);
- ``locks``: one process per run directory;
- ``reproduce``: the registry of named full runs recorded in ``book/results/``;
- ``symbolic``: the sympy derivations that chapters state and tests reuse;
- ``plots``: image grids, learning curves, latent manifolds, scatter, interpolation, the latent explorer;
- ``course``: the setup call of every chapter (quick/full switch, device, seed);
- ``checks``: checks students run on their own implementations, with explanations;
- ``assignments``: student versions, autograder material and grading, from the chapters.

Command line: ``python -m companion --help``.
"""

__version__ = "0.1.0"
