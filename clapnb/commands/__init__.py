"""Sub-commands of ``clapnb``; each module registers one (see :mod:`clapnb.cli`)."""
