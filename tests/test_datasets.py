"""`python -m lpd_jax.datasets fetch`: canonical archives made here, served on 127.0.0.1
(never the internet), downloaded, resumed, verified, converted, and read by the loaders."""

import dataclasses
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from archives import ArchiveServer, cifar_archive, serve_as, tiny_imagenet_archive
from conftest import REPO, _cli_options, run_cli, tiny_config

from lpd_jax import data, datasets, locks
from lpd_jax.datasets import download, store
from lpd_jax.errors import DataError


def _same(arrays, expected):
  for key, value in expected.items():
    if key != 'class_names':
      np.testing.assert_array_equal(np.asarray(arrays[key]), value, err_msg=key)


def _publish(monkeypatch, name, **changes):
  monkeypatch.setitem(
    datasets.SOURCES, name, dataclasses.replace(datasets.SOURCES[name], **changes)
  )


@pytest.fixture(scope='module')
def cifar10_archive(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('archives') / 'cifar-10-python.tar.gz')
  return path, cifar_archive(path, 'cifar10')


@pytest.fixture(scope='module')
def cifar10_fetched(cifar10_archive, tmp_path_factory):
  """A data dir into which cifar10 was fetched from --from (module-shared, read-only)."""
  path, _ = cifar10_archive
  data_dir = str(tmp_path_factory.mktemp('fetched'))
  with pytest.MonkeyPatch.context() as m:
    _publish(m, 'cifar10', **_checksums(path))
    datasets.fetch('cifar10', data_dir, archive=path)
  return data_dir


def _checksums(path):
  from archives import md5_and_size

  digest, size = md5_and_size(path)
  return dict(md5=digest, size=size)


def test_fetch_resumes_a_cut_download_verifies_and_converts(cifar10_archive, tmp_path, monkeypatch):
  path, expected = cifar10_archive
  with ArchiveServer({'/cifar-10-python.tar.gz': path}) as server:
    monkeypatch.setitem(
      datasets.SOURCES, 'cifar10', serve_as(datasets.SOURCES['cifar10'], server, path)
    )
    size = datasets.SOURCES['cifar10'].size
    server.cut_next = size // 3
    with pytest.raises(DataError, match='was cut at .* rerun the same command to resume') as err:
      datasets.fetch('cifar10', str(tmp_path))
    assert '\n' not in str(err.value)
    part = tmp_path / 'downloads' / 'cifar-10-python.tar.gz.part'
    assert part.stat().st_size == size // 3
    folder = datasets.fetch('cifar10', str(tmp_path))
    assert server.requests[-1] == ('/cifar-10-python.tar.gz', f'bytes={size // 3}-')
  archive = tmp_path / 'downloads' / 'cifar-10-python.tar.gz'
  assert not part.exists() and archive.stat().st_size == size
  arrays, manifest = datasets.load('cifar10', str(tmp_path))
  _same(arrays, expected)
  assert all(isinstance(a, np.memmap) for a in arrays.values())  # read memory-mapped
  assert arrays['train_images'].shape == (20, 32, 32, 3)
  assert arrays['train_images'].dtype == np.uint8 and arrays['train_labels'].dtype == np.int32
  assert manifest['class_names'] == expected['class_names']
  assert manifest['arrays']['test_labels'] == dict(
    file='test_labels.npy',
    shape=[6],
    dtype='int32',
    crc32=store.crc32(expected['test_labels'].astype(np.int32)),
  )
  ds = data.load_dataset(tiny_config(dataset='cifar10', data_dir=str(tmp_path)))
  np.testing.assert_array_equal(ds.train_images, expected['train_images'])
  np.testing.assert_array_equal(ds.test_labels, expected['test_labels'])
  assert ds.num_classes == 10 and folder == str(tmp_path / 'cifar10')


def test_a_wrong_checksum_moves_the_file_aside_and_the_next_fetch_downloads_again(
  cifar10_archive, tmp_path, monkeypatch
):
  path, _ = cifar10_archive
  with ArchiveServer({'/cifar-10-python.tar.gz': path}) as server:
    good = serve_as(datasets.SOURCES['cifar10'], server, path)
    monkeypatch.setitem(datasets.SOURCES, 'cifar10', dataclasses.replace(good, md5='0' * 32))
    with pytest.raises(DataError, match='damaged or not the published archive .* moved aside to'):
      datasets.fetch('cifar10', str(tmp_path))
    aside = [p.name for p in (tmp_path / 'downloads').iterdir()]
    assert len(aside) == 1 and aside[0].startswith('cifar-10-python.tar.gz.bad-'), aside
    assert not (tmp_path / 'cifar10').exists()
    monkeypatch.setitem(datasets.SOURCES, 'cifar10', good)
    datasets.fetch('cifar10', str(tmp_path))
    assert len(server.requests) == 2  # downloaded again, whole
  assert (tmp_path / 'downloads' / aside[0]).exists()  # the bad file is kept


def test_http_errors_and_no_network_are_one_line_naming_the_url_and_from(tmp_path, monkeypatch):
  with ArchiveServer({}) as server:
    _publish(monkeypatch, 'cifar100', url=f'{server.url}/cifar-100-python.tar.gz')
    with pytest.raises(DataError) as err:
      datasets.fetch('cifar100', str(tmp_path))
  assert 'answered HTTP 404' in str(err.value)
  assert '--from=PATH/TO/cifar-100-python.tar.gz' in str(err.value)
  with pytest.raises(DataError, match=r'cannot reach http://127.0.0.1:\d+/cifar-100-python') as err:
    datasets.fetch('cifar100', str(tmp_path))  # the server is gone: connection refused
  assert '--from=' in str(err.value) and '\n' not in str(err.value)
  assert not (tmp_path / 'cifar100').exists()


def test_a_truncated_archive_is_named_so_and_left_where_the_user_put_it(
  cifar10_archive, tmp_path, monkeypatch
):
  path, _ = cifar10_archive
  _publish(monkeypatch, 'cifar10', **_checksums(path))
  cut = tmp_path / 'cifar-10-python.tar.gz'
  cut.write_bytes(open(path, 'rb').read()[:1000])
  with pytest.raises(DataError, match=r'MB of .* MB: truncated \(an incomplete download'):
    datasets.fetch('cifar10', str(tmp_path / 'data'), archive=str(cut))
  assert cut.exists()  # --from's file is the user's: never moved
  # A truncated archive that passes no checksum (a converter called directly) is one line too.
  with pytest.raises(DataError, match='cannot be read as a tar.gz archive .* truncated'):
    datasets.cifar.convert(str(cut), 'cifar10')


def test_cifar100_from_disk_keeps_fine_and_coarse_labels(tmp_path, monkeypatch):
  path = str(tmp_path / 'cifar-100-python.tar.gz')
  expected = cifar_archive(path, 'cifar100', train_per_batch=3, test=5, seed=2)
  _publish(monkeypatch, 'cifar100', **_checksums(path))
  datasets.fetch('cifar100', str(tmp_path / 'data'), archive=path)
  arrays, manifest = datasets.load('cifar100', str(tmp_path / 'data'))
  _same(arrays, expected)
  assert set(arrays) == {
    'train_images',
    'train_labels',
    'train_coarse_labels',
    'test_images',
    'test_labels',
    'test_coarse_labels',
  }
  assert len(manifest['class_names']) == 100 and manifest['coarse_class_names'][3] == 'super_3'
  assert manifest['source']['archive'] == 'cifar-100-python.tar.gz'


def test_tiny_imagenet_from_its_zip_and_from_the_unzipped_folder(tmp_path, monkeypatch):
  path = str(tmp_path / 'tiny-imagenet-200.zip')
  expected = tiny_imagenet_archive(path)
  _publish(monkeypatch, 'tiny_imagenet', **_checksums(path))
  datasets.fetch('tiny_imagenet', str(tmp_path / 'a'), archive=path)
  ds = data.load_dataset(tiny_config(dataset='tiny_imagenet', data_dir=str(tmp_path / 'a')))
  np.testing.assert_array_equal(ds.train_images, expected['train_images'])  # _0, _1, _2, ..., _10
  np.testing.assert_array_equal(ds.train_labels, expected['train_labels'])
  np.testing.assert_array_equal(ds.test_images, expected['test_images'])
  np.testing.assert_array_equal(ds.test_labels, expected['test_labels'])
  assert ds.num_classes == 3 and ds.train_images.shape == (33, 64, 64, 3)
  _, manifest = datasets.load('tiny_imagenet', str(tmp_path / 'a'))
  assert manifest['class_names'] == expected['class_names']
  shutil.unpack_archive(path, str(tmp_path / 'unzipped'))
  datasets.fetch('tiny_imagenet', str(tmp_path / 'b'), archive=str(tmp_path / 'unzipped'))
  arrays, _ = datasets.load('tiny_imagenet', str(tmp_path / 'b'))
  _same(arrays, expected)


def test_a_converted_array_damaged_later_is_caught_and_converted_again_without_download(
  cifar10_archive, cifar10_fetched, tmp_path, monkeypatch, capsys
):
  path, expected = cifar10_archive
  data_dir = str(tmp_path / 'data')
  shutil.copytree(cifar10_fetched, data_dir)
  images = os.path.join(data_dir, 'cifar10', 'train_images.npy')
  with open(images, 'r+b') as f:
    f.seek(-100, os.SEEK_END)
    byte = f.read(1)
    f.seek(-100, os.SEEK_END)
    f.write(bytes([byte[0] ^ 0xFF]))
  config = tiny_config(dataset='cifar10', data_dir=data_dir)
  with pytest.raises(DataError) as err:
    data.load_dataset(config)
  assert str(err.value) == (
    f'{images} does not match its manifest (CRC-32 differs: damaged after conversion); convert '
    f'it again: python -m lpd_jax.datasets fetch cifar10 --data_dir={data_dir} --force'
  )
  os.remove(os.path.join(data_dir, 'cifar10', 'test_labels.npy'))
  with pytest.raises(DataError, match='test_labels.npy is missing; convert it again'):
    store.read(data_dir, 'cifar10', verify=False)
  # --from keeps nothing in downloads/: put the archive where a download leaves it.
  shutil.copy(path, os.path.join(data_dir, 'downloads', 'cifar-10-python.tar.gz'))
  _publish(
    monkeypatch, 'cifar10', url='http://127.0.0.1:9/cifar-10-python.tar.gz', **_checksums(path)
  )
  datasets.fetch('cifar10', data_dir)  # no server: the kept archive is converted again
  assert 'converting it again' in capsys.readouterr().out
  _same(datasets.load('cifar10', data_dir)[0], expected)
  datasets.fetch('cifar10', data_dir)
  assert 'already in' in capsys.readouterr().out


def test_missing_data_says_which_command_fetches_it(tmp_path, monkeypatch):
  monkeypatch.setenv('LPD_JAX_DATA_DIR', str(tmp_path / 'default'))
  with pytest.raises(DataError) as err:
    data.load_dataset(tiny_config(dataset='cifar100'))
  where = tmp_path / 'default'
  assert str(err.value) == (
    f"dataset 'cifar100' is not in data_dir {where} (no cifar100/manifest.json); fetch it "
    f'first: python -m lpd_jax.datasets fetch cifar100 --data_dir={where}'
  )
  with pytest.raises(DataError, match="no dataset 'svhn' to fetch; choose one of cifar10, "):
    datasets.fetch('svhn', str(tmp_path))


def test_a_second_fetch_of_the_same_data_exits_at_once_naming_the_first(tmp_path):
  os.makedirs(tmp_path / 'downloads')

  def busy(holder):
    return AssertionError(holder)

  with locks.exclusive(str(tmp_path / '.cifar10.lock'), busy):  # as a running fetch holds it
    with pytest.raises(DataError, match=r'another fetch of cifar10 into .* is running \(pid \d+'):
      datasets.fetch('cifar10', str(tmp_path))
    datasets_other = tmp_path / '.cifar100.lock'
    assert not datasets_other.exists()  # other datasets are not locked


def test_a_full_disk_keeps_the_partial_download_and_says_so(cifar10_archive, tmp_path, monkeypatch):
  path, _ = cifar10_archive
  real_open = open

  class Full:
    def __init__(self, f):
      self.f, self.written = f, 0

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

    def tell(self):
      return self.f.tell()

    def flush(self):
      self.f.flush()

    def write(self, block):
      if self.written:
        raise OSError(errno.ENOSPC, 'No space left on device')
      self.written = self.f.write(block[:1000])

  monkeypatch.setattr(download, 'CHUNK', 4096)
  monkeypatch.setattr(download, 'open', lambda p, m='r': Full(real_open(p, m)), raising=False)
  with ArchiveServer({'/cifar-10-python.tar.gz': path}) as server:
    monkeypatch.setitem(
      datasets.SOURCES, 'cifar10', serve_as(datasets.SOURCES['cifar10'], server, path)
    )
    with pytest.raises(DataError, match='is full .* the partial download is kept: free space'):
      datasets.fetch('cifar10', str(tmp_path))
  assert (tmp_path / 'downloads' / 'cifar-10-python.tar.gz.part').stat().st_size == 1000
  monkeypatch.setattr(download, 'free_bytes', lambda folder: 10)
  with pytest.raises(DataError, match='not enough disk space in .* more, 0.0 MB free'):
    datasets.fetch('cifar10', str(tmp_path))


def test_unpickling_runs_no_code_from_an_archive(tmp_path):
  import io
  import pickle
  import tarfile

  class Evil:
    def __reduce__(self):
      return (os.system, ('echo pwned',))

  path = tmp_path / 'cifar-10-python.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    payload = pickle.dumps({b'data': Evil()}, protocol=2)
    info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
  with pytest.raises(DataError, match='data_batch_1 is no CIFAR batch .*system is not CIFAR data'):
    datasets.cifar.convert(str(path), 'cifar10')


def _data_section_commands():
  readme = open(os.path.join(REPO, 'README.md')).read()
  section = readme[readme.index('## Data\n') : readme.index('\n## ', readme.index('## Data\n'))]
  block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def _fetch_cli(source, *args):
  """`python -m lpd_jax.datasets *args` in a child whose SOURCES entry is `source` (the
  loopback server's address and the synthetic archive's checksum)."""
  code = (
    'import dataclasses, runpy, sys\n'
    'from lpd_jax import datasets\n'
    f'datasets.SOURCES[{source.name!r}] = dataclasses.replace(datasets.SOURCES[{source.name!r}], '
    f'url={source.url!r}, md5={source.md5!r}, size={source.size})\n'
    "sys.argv = ['python -m lpd_jax.datasets', *sys.argv[1:]]\n"
    "runpy.run_module('lpd_jax.datasets', run_name='__main__')\n"
  )
  return subprocess.run(
    [sys.executable, '-c', code, *args], capture_output=True, timeout=120, **_cli_options()
  )


def test_the_readme_data_section_runs_from_fetch_to_lpd_cifar100_training(tmp_path, monkeypatch):
  """The README's three commands as written (the workdir in tmp_path, the run shrunk to one
  epoch of tiny members), against a canonical CIFAR-100 archive on a loopback server."""
  commands = _data_section_commands()
  assert commands == [
    'python -m lpd_jax.datasets fetch cifar100',
    'python train.py --config=configs/lpd_cifar100.py --workdir=workdirs/lpd_cifar100',
    'python eval.py --workdir=workdirs/lpd_cifar100',
  ]
  path = str(tmp_path / 'cifar-100-python.tar.gz')
  cifar_archive(path, 'cifar100', train_per_batch=13, test=16, seed=3)  # 65 train images
  monkeypatch.setenv('LPD_JAX_DATA_DIR', str(tmp_path / 'data'))  # the default data dir
  workdir = str(tmp_path / 'lpd_cifar100')
  with ArchiveServer({'/cifar-100-python.tar.gz': path}) as server:
    source = serve_as(datasets.SOURCES['cifar100'], server, path)
    fetched = _fetch_cli(source, *shlex.split(commands[0])[3:])
    assert fetched.returncode == 0, fetched.stderr
  assert f'cifar100 ready in {tmp_path}/data/cifar100' in fetched.stdout
  tiny = ['--config.width=4', '--config.num_members=1', '--config.num_epochs=1']
  tiny += ['--config.batch_size=32', '--config.eval.batch_size=16']
  train_args = shlex.split(commands[1].replace('workdirs/lpd_cifar100', workdir))[2:]
  trained = run_cli('train.py', *train_args, *tiny)
  assert trained.returncode == 0, trained.stderr
  assert '65 train / 16 test images of 32x32x3, 100 classes' in trained.stdout
  eval_args = shlex.split(commands[2].replace('workdirs/lpd_cifar100', workdir))[2:]
  evaluated = run_cli('eval.py', *eval_args, '--config.eval.suite=clean')
  assert evaluated.returncode == 0, evaluated.stderr
  report = json.load(open(os.path.join(workdir, 'eval_clean.json')))
  assert report['num_examples'] == 16 and len(report['member_accuracy']) == 1
  # The command line's own faults: one line each.
  bad = _fetch_cli(source, 'fetch', 'svhn')
  assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
    "error: no dataset 'svhn' to fetch; choose one of cifar10, cifar100, tiny_imagenet"
  ]
