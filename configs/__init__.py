"""Experiment configs: each file has get_config() and its command in the docstring."""
