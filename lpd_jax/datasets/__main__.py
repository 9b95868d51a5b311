"""python -m lpd_jax.datasets fetch NAME [--data_dir=DIR] [--from=ARCHIVE] [--force]: the
command line of `lpd_jax.datasets` (its flags live here only)."""

import sys

from absl import app, flags

from lpd_jax import cli, datasets

USAGE = (
  'python -m lpd_jax.datasets fetch NAME [--data_dir=DIR] [--from=ARCHIVE] [--force], '
  f'NAME one of {", ".join(datasets.SOURCES)}'
)


def main(argv):
  FLAGS = flags.FLAGS
  if len(argv) != 3 or argv[1] != 'fetch':
    raise app.UsageError(USAGE)
  cli.run_reporting_user_errors(
    lambda: datasets.fetch(argv[2], FLAGS.data_dir, FLAGS['from'].value, FLAGS.force)
  )


if __name__ == '__main__':
  flags.DEFINE_string(
    'data_dir', '', 'where datasets live (default $LPD_JAX_DATA_DIR or ~/lpd_jax_data)'
  )
  flags.DEFINE_string('from', None, 'the archive already on disk (no download)')
  flags.DEFINE_bool('force', False, 'convert again even if a verified conversion is there')
  app.run(main, argv=sys.argv)
