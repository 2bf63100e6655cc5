"""lcgan: CycleGAN-style unpaired translation in VAE latent space."""
from pathlib import Path

# the Hydra config tree, package data (a link to the checkout's conf/ there). An absolute path: Hydra
# reads it as a folder whether a command runs as `python -m lcgan.train` or as the `lcgan-train` script
# (a relative one becomes pkg://lcgan/conf there, which needs conf/ to be an importable package)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")

from lcgan import config  # noqa: E402,F401  stores the config schemas that conf/ names, and the --help resolver
