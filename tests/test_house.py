"""The house of docs/architecture.md, "Floors" and "Import rules", read from the source with
`ast`: floors, no circles, pure modules that import no driver, one place that names devices."""

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'lpd_jax')

# Lowest floor first. A module may import modules of its own floor or below, never above.
# config sits above methods and suites because it assembles their registries' defaults.
FLOORS = (
  (
    'base',
    (
      'lpd_jax.errors',
      'lpd_jax.pytrees',
      'lpd_jax.sharding',
      'lpd_jax.models',
      'lpd_jax.dropout',
      'lpd_jax.data',
      'lpd_jax.datasets',
      'lpd_jax.locks',
      'lpd_jax.input_pipeline',
      'lpd_jax.checkpoint',
      'lpd_jax.workdir',
      'lpd_jax.metric_writers',
      'lpd_jax.progress',
      'lpd_jax.interrupts',
      'lpd_jax.names',
      'lpd_jax.compilation_cache',
      'lpd_jax.provenance',
    ),
  ),
  (
    'core',
    (
      'lpd_jax.ensemble',
      'lpd_jax.gradients',
      'lpd_jax.predict',
      'lpd_jax.probes',
      'lpd_jax.attacks',
      'lpd_jax.methods',
      'lpd_jax.certify',
      'lpd_jax.audit',
    ),
  ),
  ('suites', ('lpd_jax.suites',)),
  ('config', ('lpd_jax.config', 'lpd_jax.evaluations')),
  ('loading', ('lpd_jax.loading',)),
  # The PyTorch bridge: layouts, conversion, export; never imported by the core.
  ('bridge', ('lpd_jax.torch_bridge',)),
  (
    'drivers',
    (
      'lpd_jax.train',
      'lpd_jax.train_step',
      'lpd_jax.evaluate',
      'lpd_jax.compare',
      'lpd_jax.study',
      'lpd_jax.workdir_config',
      'lpd_jax.cli',
      'lpd_jax.datasets.__main__',  # the fetch command line (flags)
      'lpd_jax.export',  # python -m lpd_jax.export (flags)
      'lpd_jax.import_torch',  # python -m lpd_jax.import_torch: writes a workdir (flags)
    ),
  ),
  ('face', ('lpd_jax',)),
)
PURE = (
  'lpd_jax.attacks',
  'lpd_jax.probes',
  'lpd_jax.dropout',
  'lpd_jax.models',
  'lpd_jax.gradients',
  'lpd_jax.certify',
  'lpd_jax.compare.paired',  # compare's statistics: NumPy only, usable from a notebook
)
FORBIDDEN_FOR_PURE = (
  'lpd_jax.config',
  'lpd_jax.data',
  'lpd_jax.checkpoint',
  'lpd_jax.methods',
  'lpd_jax.suites',
  'lpd_jax.evaluate',
  'lpd_jax.train',
  'lpd_jax.loading',
)


def _within(module, prefix):
  return module == prefix or module.startswith(prefix + '.')


def modules():
  """{module name: path} of every module of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        module = os.path.relpath(path[:-3], REPO).replace(os.sep, '.')
        out[module[: -len('.__init__')] if module.endswith('.__init__') else module] = path
  return out


def import_graph():
  """{module: set of package modules it imports}, at any depth of the file (inside
  functions too: an import hidden in a function is still an edge of the house)."""
  mods = modules()
  graph = {}
  for module, path in mods.items():
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = package.split('.')[: len(package.split('.')) - node.level + 1]
          base = '.'.join(parts + ([base] if base else []))
        names = [base] + [f'{base}.{a.name}' for a in node.names]
      else:
        continue
      for name in names:
        while name and name not in mods:  # 'lpd_jax.attacks.pgd' (a function) -> the module
          name = name.rpartition('.')[0]
        if name and name != module and not _within(module, name):
          targets.add(name)
    graph[module] = targets
  return graph


def floor_of(module):
  """The floor index of `module` (its longest matching prefix); the package's face,
  `lpd_jax` itself, matches only itself, so a module missing from FLOORS has none."""
  matches = [
    (len(prefix), i)
    for i, (_, prefixes) in enumerate(FLOORS)
    for prefix in prefixes
    if module == prefix or (prefix != 'lpd_jax' and _within(module, prefix))
  ]
  return max(matches)[1] if matches else None


def find_cycle(graph):
  """A list of modules forming an import circle, or None."""
  state, stack = {}, []

  def visit(u):
    state[u] = 'open'
    stack.append(u)
    for v in sorted(graph[u]):
      if state.get(v) == 'open':
        return stack[stack.index(v) :] + [v]
      if v not in state:
        found = visit(v)
        if found:
          return found
    stack.pop()
    state[u] = 'done'
    return None

  for u in sorted(graph):
    if u not in state:
      found = visit(u)
      if found:
        return found
  return None


def test_the_graph_reader_sees_relative_and_nested_imports():
  graph = import_graph()
  assert 'lpd_jax.attacks.common' in graph['lpd_jax.attacks.gradient']  # from lpd_jax.attacks...
  assert 'lpd_jax.methods.common' in graph['lpd_jax.methods.lpd']
  assert {'lpd_jax.suites', 'lpd_jax.methods'} <= graph['lpd_jax.config']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None
  assert floor_of('lpd_jax.not_yet_placed') is None and floor_of('lpd_jax') == len(FLOORS) - 1
  assert FLOORS[floor_of('lpd_jax.suites.paper')][0] == 'suites'


def test_the_package_has_no_import_cycle():
  assert find_cycle(import_graph()) is None


def test_every_module_has_a_floor_and_imports_point_down():
  graph = import_graph()
  unplaced = sorted(m for m in graph if floor_of(m) is None)
  assert not unplaced, f'modules without a floor in tests/test_house.py: {unplaced}'
  upward = [
    f'{m} ({FLOORS[floor_of(m)][0]}) imports {t} ({FLOORS[floor_of(t)][0]})'
    for m, targets in graph.items()
    for t in targets
    if floor_of(t) > floor_of(m)
  ]
  assert not upward, '\n'.join(upward)


def test_pure_modules_import_no_driver():
  graph = import_graph()
  bad = [
    f'{m} imports {t}'
    for m, targets in graph.items()
    if any(_within(m, p) for p in PURE)
    for t in targets
    if any(_within(t, f) for f in FORBIDDEN_FOR_PURE)
  ]
  assert not bad, '\n'.join(bad)


@pytest.mark.parametrize(
  'graph, expected',
  [
    ({'lpd_jax.probes': {'lpd_jax.methods'}, 'lpd_jax.methods': set()}, 'pure'),
    ({'lpd_jax.data': {'lpd_jax.train'}, 'lpd_jax.train': set()}, 'upward'),
  ],
)
def test_the_checks_fail_on_a_broken_house(graph, expected):
  """The rules above flag what they are for (on hand-made graphs)."""
  pure = [
    m
    for m, t in graph.items()
    if any(_within(m, p) for p in PURE)
    and any(_within(x, f) for x in t for f in FORBIDDEN_FOR_PURE)
  ]
  upward = [m for m, t in graph.items() for x in t if floor_of(x) > floor_of(m)]
  assert bool(pure) == (expected == 'pure') and bool(upward) == (expected == 'upward')


def test_only_sharding_names_devices():
  pattern = re.compile(r'jax\.(local_)?devices\(')
  offenders = []
  for root in (PACKAGE, os.path.join(REPO, 'benchmarks')):
    for folder, _, files in os.walk(root):
      for name in files:
        path = os.path.join(folder, name)
        if name.endswith('.py') and path != os.path.join(PACKAGE, 'sharding.py'):
          if pattern.search(open(path).read()):
            offenders.append(os.path.relpath(path, REPO))
  assert not offenders, offenders


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines():
  """A module past ~400 lines does several jobs: split it (compare became a package)."""
  long = {
    os.path.relpath(path, REPO): n
    for path in modules().values()
    if (n := len(open(path).read().splitlines())) > MAX_MODULE_LINES
  }
  assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'


def flags_defined_on_import(path):
  """Lines of `path` that define an absl / ml_collections flag when the module is imported:
  a DEFINE_* call outside any function and outside `if __name__ == '__main__':`."""
  tree = ast.parse(open(path).read(), path)

  def is_main_guard(node):
    return (
      isinstance(node, ast.If)
      and isinstance(node.test, ast.Compare)
      and isinstance(node.test.left, ast.Name)
      and node.test.left.id == '__name__'
    )

  found = []

  def visit(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or is_main_guard(node):
      return
    if isinstance(node, ast.Call):
      name = (
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', '')
      )
      if name.startswith('DEFINE_'):
        found.append(node.lineno)
    for child in ast.iter_child_nodes(node):
      visit(child)

  visit(tree)
  return found


def test_no_library_module_defines_flags():
  """Flags live in train.py, eval.py and the `python -m` entry points' mains: importing a
  library module defines none (a second definition is absl's duplicate-flag error)."""
  offenders = {
    os.path.relpath(path, REPO): lines
    for path in modules().values()
    if (lines := flags_defined_on_import(path))
  }
  assert not offenders, offenders


def test_the_flag_check_sees_a_module_level_definition(tmp_path):
  path = tmp_path / 'm.py'
  path.write_text(
    'from absl import flags\n'
    "A = flags.DEFINE_string('a', None, '')\n"
    'def f():\n'
    "  flags.DEFINE_string('b', None, '')\n"
    "if __name__ == '__main__':\n"
    "  flags.DEFINE_string('c', None, '')\n"
  )
  assert flags_defined_on_import(str(path)) == [2]
