"""python -m lpd_jax.compare --workdirs=A,B,... --out=DIR [--run_missing]: the command line
of `lpd_jax.compare` (its flags live here only)."""

import sys

from absl import app, flags

from lpd_jax import cli, compare
from lpd_jax.evaluations import default_name
from lpd_jax.names import split_names


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if not FLAGS.workdirs or not FLAGS.out:
    raise app.UsageError('give --workdirs=A,B,... and --out=DIR')
  names = [*split_names(FLAGS.suites)]
  if FLAGS.run_missing:
    names += [default_name(s, 'expected') for s in split_names(FLAGS.expected_suites)]
  cli.run_reporting_user_errors(
    lambda: compare.write(
      list(split_names(FLAGS.workdirs)),
      FLAGS.out,
      run_missing_evaluations=tuple(names) if FLAGS.run_missing else (),
    )
  )


if __name__ == '__main__':
  flags.DEFINE_string('workdirs', None, 'comma-separated workdirs')
  flags.DEFINE_string('out', None, 'folder for comparison.md, comparison.json and plots')
  flags.DEFINE_bool('run_missing', False, 'run the missing evaluations first')
  flags.DEFINE_string(
    'suites', ','.join(compare.SUITES), 'evaluations --run_missing runs (names or types)'
  )
  flags.DEFINE_string(
    'expected_suites',
    ','.join(compare.EXPECTED_SUITES),
    "suites --run_missing also runs in 'expected' inference",
  )
  app.run(main, argv=sys.argv)
