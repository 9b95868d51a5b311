"""Tiny-ImageNet (Stanford CS231n, http://cs231n.stanford.edu/tiny-imagenet-200.zip) from its
zip archive, or from the folder it unzips to.

Layout as distributed (under `tiny-imagenet-200/`):
  wnids.txt                      the 200 class ids (WordNet ids), one a line: label = line index
  words.txt                      '<wnid>\\t<names>' for all of WordNet (the class names)
  train/<wnid>/images/*.JPEG     500 images a class, 64x64 (some greyscale)
  val/images/val_<i>.JPEG        10,000 images, labelled by
  val/val_annotations.txt        '<file>\\t<wnid>\\t<box>': the labelled split, our test set
  test/images/                   unlabelled: not used
Converted to images uint8 [N, 64, 64, 3] (greyscale as RGB) and labels int32 [N]; train in
wnids.txt order then the images' numbers, test in val_annotations.txt order.
"""

import io
import os
import re
import zipfile

import numpy as np

from lpd_jax.errors import DataError

ROOT = 'tiny-imagenet-200'


class _Zip:
  def __init__(self, path):
    self.zip = zipfile.ZipFile(path)
    self.names = set(self.zip.namelist())

  def read(self, name):
    return self.zip.read(f'{ROOT}/{name}')

  def list(self, folder):
    prefix = f'{ROOT}/{folder}/'
    return [
      n[len(prefix) :] for n in self.names if n.startswith(prefix) and '/' not in n[len(prefix) :]
    ]


class _Folder:
  def __init__(self, path):
    self.root = (
      path if os.path.basename(os.path.normpath(path)) == ROOT else os.path.join(path, ROOT)
    )

  def read(self, name):
    with open(os.path.join(self.root, name), 'rb') as f:
      return f.read()

  def list(self, folder):
    return os.listdir(os.path.join(self.root, folder))


def _natural(name):
  """'n01443537_12.JPEG' sorts after 'n01443537_9.JPEG'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _decode(blob):
  from PIL import Image

  with Image.open(io.BytesIO(blob)) as image:
    return np.asarray(image.convert('RGB'), np.uint8)


def convert(path, name='tiny_imagenet', progress=lambda what: None):
  """The arrays and class names of tiny-imagenet-200.zip (or its unzipped folder) at `path`.

  Returns:
    (arrays, info): arrays {train_images [N, 64, 64, 3] uint8, train_labels [N] int32,
    test_images, test_labels}; info {class_names, wnids}.
  """
  del name
  try:
    source = _Folder(path) if os.path.isdir(path) else _Zip(path)
    wnids = [w.strip() for w in source.read('wnids.txt').decode().splitlines() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    words = dict(
      line.split('\t', 1) for line in source.read('words.txt').decode().splitlines() if '\t' in line
    )
    items = {'train': [], 'test': []}
    for w in wnids:
      files = sorted(
        (f for f in source.list(f'train/{w}/images') if f.endswith('.JPEG')), key=_natural
      )
      items['train'] += [(f'train/{w}/images/{f}', index[w]) for f in files]
    for line in source.read('val/val_annotations.txt').decode().splitlines():
      if line.strip():
        file_name, wnid = line.split('\t')[:2]
        items['test'].append((f'val/images/{file_name}', index[wnid]))
    arrays = {}
    for split, pairs in items.items():
      progress(f'{split}: {len(pairs):,} images')
      arrays[f'{split}_images'] = np.stack([_decode(source.read(p)) for p, _ in pairs])
      arrays[f'{split}_labels'] = np.asarray([y for _, y in pairs], np.int32)
  except (zipfile.BadZipFile, EOFError, OSError) as e:
    raise DataError(
      f'{path} cannot be read as the Tiny-ImageNet archive ({type(e).__name__}: {e}); '
      'truncated or damaged: fetch it again'
    ) from None
  except KeyError as e:
    raise DataError(f'{path} lacks {e}: not the tiny-imagenet-200 layout') from None
  return arrays, dict(class_names=[words.get(w, w) for w in wnids], wnids=wnids)
