"""python -m lpd_jax.compare --workdirs=A,B,... --out=DIR [--run_missing] [--reference=LABEL]
[--seed=0] [--resamples=2000], or --workdirs=A,B,... --history: the command line of
`lpd_jax.compare` (its flags live here only)."""

import sys

from absl import app, flags

from lpd_jax import cli, compare
from lpd_jax.evaluations import default_name
from lpd_jax.names import split_names


def missing_names(suites=None, expected_suites=None):
  """The evaluations `--run_missing` runs: with neither flag given (None), every suite
  (`compare.SUITES`) and `compare.EXPECTED_SUITES` under 'expected' inference; with either
  given, exactly what the given ones name (`--suites=clean`: clean alone)."""
  if suites is None and expected_suites is None:
    suites, expected_suites = ','.join(compare.SUITES), ','.join(compare.EXPECTED_SUITES)
  names = [*split_names(suites or '')]
  names += [default_name(s, 'expected') for s in split_names(expected_suites or '')]
  return tuple(dict.fromkeys(names))


def given(name):
  """A flag's value where the command line gave it, else None."""
  return flags.FLAGS[name].value if flags.FLAGS[name].present else None


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if FLAGS.workdirs and FLAGS.history:
    print(compare.history_text(list(split_names(FLAGS.workdirs))))
    return
  if not FLAGS.workdirs or not FLAGS.out:
    raise app.UsageError('give --workdirs=A,B,... and --out=DIR (or --history)')
  chosen = [given(name) for name in ('suites', 'expected_suites')]
  if not FLAGS.run_missing and chosen != [None, None]:
    raise app.UsageError('--suites and --expected_suites choose what --run_missing runs: give it')
  names = missing_names(*chosen) if FLAGS.run_missing else ()
  cli.run_reporting_user_errors(
    lambda: compare.write(
      list(split_names(FLAGS.workdirs)),
      FLAGS.out,
      run_missing_evaluations=names,
      reference=FLAGS.reference,
      seed=FLAGS.seed,
      resamples=FLAGS.resamples,
    )
  )


if __name__ == '__main__':
  flags.DEFINE_string('workdirs', None, 'comma-separated workdirs')
  flags.DEFINE_string('out', None, 'folder for comparison.md, comparison.json and plots')
  flags.DEFINE_bool('run_missing', False, 'run the missing evaluations first')
  flags.DEFINE_bool('history', False, "list the workdirs' earlier reports (reports_history/)")
  flags.DEFINE_string(
    'reference', None, 'label of the column differences are taken against (default: the first)'
  )
  flags.DEFINE_integer('seed', 0, 'seed of the bootstrap intervals (same seed, same tables)')
  flags.DEFINE_integer('resamples', compare.RESAMPLES, 'bootstrap replicates per interval (B)')
  flags.DEFINE_string(
    'suites',
    ','.join(compare.SUITES),
    'evaluations --run_missing runs (names or types); given alone, only these',
  )
  flags.DEFINE_string(
    'expected_suites',
    ','.join(compare.EXPECTED_SUITES),
    "suites --run_missing runs in 'expected' inference; given alone, only these",
  )
  app.run(main, argv=sys.argv)
