"""python -m lpd_jax.export --workdir=W --out=DIR [--inference=raw]: a workdir's ensemble as
`.safetensors` weights in PyTorch's names and a PyTorch module file that need no lpd-jax
(`lpd_jax.torch_bridge.export`; its flags live here only)."""

import sys

from absl import app, flags

from lpd_jax import cli
from lpd_jax.torch_bridge import export


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  FLAGS = flags.FLAGS

  def run():
    for line in export.export(FLAGS.workdir, FLAGS.out, FLAGS.inference):
      print(line, flush=True)

  cli.run_reporting_user_errors(run)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'the workdir whose ensemble to export')
  flags.DEFINE_string('out', None, 'the folder to write (created)')
  flags.DEFINE_string(
    'inference', None, "raw (default: the workdir's eval.inference; 'expected' is refused)"
  )
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main, argv=sys.argv)
