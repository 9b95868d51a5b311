"""Trains an ensemble: python train.py --config=configs/quickstart.py --workdir=DIR."""

from lpd_jax import cli, train

_CONFIG, _WORKDIR = cli.define_flags(config_required=True)


def main(argv):
  del argv
  cli.run_reporting_user_errors(train.train_and_evaluate, _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
