"""Comma-separated lists of names ('clean,robust_expected', 'lpd,k5', workdirs): the one
parser, for configs, suites, the study and the command lines."""


def split_names(text) -> tuple:
  """'a, b,,c' -> ('a', 'b', 'c'): stripped, empty items dropped; None or '' -> ()."""
  return tuple(t.strip() for t in str(text or '').split(',') if t.strip())
