"""Where the benchmarks write their JSON: one helper for all of them."""

import json
import os


def write(result, name, backend, out=''):
  """Writes `result` as JSON to `out`, or to benchmarks/out/<name>_<backend>.json
  (git-ignored) when `out` is empty; prints and returns the path."""
  path = out or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'out', f'{name}_{backend}.json'
  )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {path}')
  return path
