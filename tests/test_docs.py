"""The docs a user needs are in the repository: no user-facing text names a file that a clone
of it lacks, and every reference to a section of docs/methods.md or docs/architecture.md names
a heading that exists. Plain text reads, no JAX compile."""

import glob
import hashlib
import json
import os
import re

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.relpath(os.path.abspath(__file__), REPO)

# What a user reads: the README, the docs, the configs, the package (docstrings, comments and
# messages alike), the notebooks, the benchmarks and the mains.
USER_FACING = (
  'README.md',
  'docs/**/*.md',
  'configs/**/*.py',
  'lpd_jax/**/*.py',
  'notebooks/*.ipynb',
  'benchmarks/*.py',
  'train.py',
  'eval.py',
  'pyproject.toml',
)
# Tests name the docs too (in their docstrings); they may use the project's shared data.
TESTS = ('tests/*.py',)

# The design notes users never had, by name in any spelling and path, except the docs'
# own pages `docs/methods.md` and `docs/architecture.md`.
DESIGN_NOTE = re.compile(r'[\w./-]*\b(?:methods|architecture)\.md\b', re.IGNORECASE)
DOC_PAGES = ('docs/methods.md', 'docs/architecture.md')
# Files outside the repository: the project's shared folder beside the checkout.
OUTSIDE = re.compile(r'\.\./shared\b|\bshared/(?:design|data|bench|reference|hooks)\b')

# Where `../shared` may appear, and why: text that says how to get or build that data.
SHARED_ALLOWED = {
  'configs/cifar10_subset.py': (
    'says how to build the CIFAR-10 subset from the fetched CIFAR-10 and where the '
    "project's own machines keep a copy of it",
    ('python -m lpd_jax.datasets fetch cifar10', 'python -m configs.cifar10_subset'),
  ),
}
# A design-note name that cannot change yet, and why; each entry must still be needed.
DESIGN_NOTE_KNOWN = {}

# `docs/methods.md, "Section"`, `docs/methods.md "A" and "B"`: the sections a reference names.
REFERENCE = re.compile(
  r'docs/(methods|architecture)\.md`?,?\s*((?:"[^"]{1,80}"(?:,?\s+and\s+|,\s*)?)+)'
)


def files(patterns):
  out = set()
  for pattern in patterns:
    for path in glob.glob(os.path.join(REPO, pattern), recursive=True):
      rel = os.path.relpath(path, REPO)
      if not rel.startswith(os.path.join('tests', 'golden')) and rel != THIS:
        out.add(rel)
  return sorted(out)


def text_of(rel):
  """A file's text as a reader sees it; a notebook's cells (sources and outputs) joined."""
  with open(os.path.join(REPO, rel), encoding='utf-8') as f:
    text = f.read()
  if rel.endswith('.ipynb'):
    cells = json.loads(text)['cells']
    return '\n'.join(
      ''.join(cell.get('source', []))
      + ''.join(''.join(o.get('text', [])) for o in cell.get('outputs', []))
      for cell in cells
    )
  return text


def design_note_names(text):
  """(line, name) of every design-note name that is not one of the docs' pages."""
  return [
    (text.count('\n', 0, m.start()) + 1, m.group())
    for m in DESIGN_NOTE.finditer(text)
    if m.group() not in DOC_PAGES
  ]


def outside_paths(text):
  """(line, text) of every mention of the shared folder outside the repository."""
  return [(text.count('\n', 0, m.start()) + 1, m.group()) for m in OUTSIDE.finditer(text)]


def headings(rel):
  """The headings of a Markdown page (outside code fences), without their #s."""
  found, fenced = set(), False
  for line in text_of(rel).splitlines():
    if line.startswith('```'):
      fenced = not fenced
    elif not fenced and (m := re.match(r'#{1,6}\s+(.+?)\s*#*\s*$', line)):
      found.add(m.group(1))
  return found


def references(text):
  """(page, section) of every section a text names: `docs/methods.md, "X"` and the like.
  A name wrapped over lines (a docstring) is read with single spaces."""
  out = []
  for m in REFERENCE.finditer(text):
    for name in re.findall(r'"([^"]+)"', m.group(2)):
      out.append((f'docs/{m.group(1)}.md', re.sub(r'\s+', ' ', name.replace('#', ' ')).strip()))
  return out


def test_no_user_facing_text_names_the_design_notes():
  offenders = []
  for rel in files(USER_FACING + TESTS):
    found = design_note_names(text_of(rel))
    if rel in DESIGN_NOTE_KNOWN:
      assert found, f'{rel} no longer names a design note: drop it from DESIGN_NOTE_KNOWN'
      continue
    offenders += [f'{rel}:{line}: {name}' for line, name in found]
  assert not offenders, 'name docs/methods.md or docs/architecture.md instead:\n' + '\n'.join(
    offenders
  )


def test_no_user_facing_text_names_a_file_outside_the_repository():
  offenders = []
  for rel in files(USER_FACING):
    found = outside_paths(text_of(rel))
    if rel in SHARED_ALLOWED:
      _, how = SHARED_ALLOWED[rel]
      missing = [h for h in how if h not in text_of(rel)]
      assert not missing, f'{rel} mentions ../shared but no longer says how to get it: {missing}'
      continue
    offenders += [f'{rel}:{line}: {name}' for line, name in found]
  assert not offenders, 'a clone of the repository has no ../shared:\n' + '\n'.join(offenders)


def test_every_section_reference_names_a_heading():
  sections = {page: headings(page) for page in DOC_PAGES}
  assert all(sections.values()), sections
  missing = [
    f'{rel}: {page}, "{name}"'
    for rel in files(USER_FACING + TESTS)
    for page, name in references(text_of(rel))
    if name not in sections[page]
  ]
  assert not missing, 'no such heading:\n' + '\n'.join(missing)


def test_the_sections_the_code_cites_exist():
  """The names the package's docstrings have cited since the design notes: kept as headings."""
  methods = headings('docs/methods.md')
  for name in (
    'Attacks',
    'Evaluation of dropout-trained members',
    'Regularizers and other methods',
    'Probes',
    'LPD keep rates',
    'PDD keep rates',
  ):
    assert name in methods
  assert {'Floors', 'Import rules', 'Registries', 'Public API', 'Style'} <= headings(
    'docs/architecture.md'
  )


@pytest.mark.parametrize(
  'text, design, outside',
  [
    ('see METHODS.md "Attacks"', True, False),
    ('in ../shared/design/ARCHITECTURE.md', True, True),
    ('the constants in `shared/design/methods.md`', True, True),
    ('docs/Methods.md', True, False),
    ('the npz in ../shared/data/cifar10_subset.npz', False, True),
    ('`shared/bench/peer/` has it', False, True),
    ('docs/methods.md, "Attacks" and docs/architecture.md, "Floors"', False, False),
    ('--workdir=/shared/run (a cluster path)', False, False),
  ],
)
def test_the_checks_flag_what_they_are_for(text, design, outside):
  assert bool(design_note_names(text)) == design
  assert bool(outside_paths(text)) == outside


def test_references_are_read_across_lines_and_lists():
  text = (
    'docs/methods.md, "Evaluation of\n  dropout-trained members"; docs/methods.md "A", "B" and\n'
    '"C". See docs/architecture.md, "Floors".'
  )
  assert references(text) == [
    ('docs/methods.md', 'Evaluation of dropout-trained members'),
    ('docs/methods.md', 'A'),
    ('docs/methods.md', 'B'),
    ('docs/methods.md', 'C'),
    ('docs/architecture.md', 'Floors'),
  ]
  assert ('docs/methods.md', 'No such section') not in set(references(text))


# -- the CIFAR-10 subset: what configs/cifar10_subset.py says is how it is built ---------------


def test_the_subset_rows_are_the_first_1017_of_each_training_batch():
  from configs import cifar10_subset

  rows = cifar10_subset.subset_indices()
  assert rows.shape == (5085,) and len(set(rows)) == 5085
  assert [rows[0], rows[1016], rows[1017], rows[-1]] == [0, 1016, 10_000, 41_016]


def test_build_subset_writes_the_npz_from_a_fetched_cifar10(tmp_path):
  """Through the fetched layout (`lpd_jax.datasets.store`): a fake CIFAR-10 whose images are
  1x1 pixels holding their row index; the digests then say every array but the names differ."""
  from configs import cifar10_subset
  from lpd_jax.datasets import store

  index = np.arange(50_000)
  images = np.stack([index % 256, index // 256 % 256, index // 65536], -1).astype(np.uint8)
  names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
  arrays = dict(
    train_images=images[:, None, None, :],
    train_labels=(index % 10).astype(np.int32),
    test_images=images[:10_000, None, None, :],
    test_labels=(index[:10_000] % 7).astype(np.int32),
  )
  store.write(str(tmp_path), 'cifar10', arrays, dict(class_names=names))
  path, differ = cifar10_subset.build_subset(str(tmp_path), str(tmp_path / 'subset.npz'))
  with np.load(path) as f:
    assert f.files == list(cifar10_subset.DIGESTS)
    got = f['train_images'][:, 0, 0].astype(np.int64)
    rows = got[:, 0] + 256 * got[:, 1] + 65536 * got[:, 2]
    np.testing.assert_array_equal(rows, cifar10_subset.subset_indices())
    assert f['train_labels'].dtype == np.uint8 and f['test_images'].shape == (500, 1, 1, 3)
    assert list(f['label_names']) == names
  assert differ == ['train_images', 'train_labels', 'test_images', 'test_labels']


@pytest.mark.skipif(
  not os.path.isfile(os.path.join(REPO, '..', 'shared', 'data', 'cifar10_subset.npz')),
  reason="the project's shared copy of the subset is not beside this checkout",
)
def test_the_recipe_rebuilds_the_shared_subset_exactly():
  """The shared copy's arrays put back where CIFAR-10's archive order has them come out of
  `subset_arrays` with the digests of `DIGESTS`, in a file of the copy's SHA-256."""
  from configs import cifar10_subset

  with np.load(cifar10_subset.SHARED_COPY) as f:
    shared = {k: f[k] for k in f.files}
  train = np.zeros((50_000, 32, 32, 3), np.uint8)
  train_labels = np.zeros(50_000, np.int32)
  train[cifar10_subset.subset_indices()] = shared['train_images']
  train_labels[cifar10_subset.subset_indices()] = shared['train_labels']
  subset = cifar10_subset.subset_arrays(
    train,
    train_labels,
    np.concatenate([shared['test_images'], np.zeros((9500, 32, 32, 3), np.uint8)]),
    np.concatenate([shared['test_labels'], np.zeros(9500, np.uint8)]).astype(np.int32),
    list(shared['label_names']),
  )
  assert {k: cifar10_subset.digest(a) for k, a in subset.items()} == cifar10_subset.DIGESTS
  assert list(subset) == list(shared)
  for key, array in subset.items():
    assert array.dtype == shared[key].dtype, key
  with open(cifar10_subset.SHARED_COPY, 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == (
      '2e13b13c35c7c24dc6a654a80b92ed538ae18d1ad68b5a2b8234820417c15d93'
    )
