"""The user errors of lpd-jax: each becomes one `error:` line and exit status 1 in the CLI.

They live on the lowest floor so that every module can raise them without importing
the module whose concept they name (a suite raises ConfigError without importing config).
"""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


class DataError(RuntimeError):
  """A dataset that is missing or malformed; the message says how to fix it."""


class CheckpointError(RuntimeError):
  """A workdir that cannot be used with the given config, or holds no usable checkpoint."""


class TrainingError(RuntimeError):
  """Training diverged (NaN or Inf loss)."""


class Interrupted(RuntimeError):
  """Ctrl-C: the message says what was saved and how to go on (exit status 130)."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, TrainingError)


def need(ok, message):
  """Raises ConfigError(message) unless `ok`: the one guard of config validation."""
  if not ok:
    raise ConfigError(message)
