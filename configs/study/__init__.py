"""Study configs: `python -m lpd_jax.study --config=configs/study/<file>.py --root=DIR`."""
