"""hrlaif: SFT vs RLAIF vs Hybrid RLAIF (arXiv 2403.08309), trained and evaluated side by side.

The one import name this project installs. Its packages, bottom layer first (docs/ARCHITECTURE.md):
core (the floor), judges, trainers and evalsets, reports, harness (the CLI and the pipeline).
"""
