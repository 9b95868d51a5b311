"""Synthetic dataset archives in exactly the canonical formats, and a loopback HTTP server.

`cifar_archive` writes cifar-10-python.tar.gz / cifar-100-python.tar.gz as their authors
lay them out (pickled protocol-2 dicts with bytes keys; 'data' uint8 [N, 3072] as three
1024-value colour planes); `tiny_imagenet_archive` writes tiny-imagenet-200.zip's layout.
Each returns the NHWC images and labels it encoded, the independent reference of the
converter. `ArchiveServer` serves files on 127.0.0.1 with HTTP range requests, and can cut
the connection in the middle of a response.
"""

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import zipfile

import numpy as np


def _add(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _batch(images, **labels):
  """A CIFAR batch dict: images [N, 32, 32, 3] -> 'data' [N, 3072] in R, G, B planes."""
  planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
  out = {b'batch_label': b'synthetic', b'data': planes}
  out.update({k.encode(): [int(v) for v in vs] for k, vs in labels.items()})
  out[b'filenames'] = [f'img_{i}.png'.encode() for i in range(len(images))]
  return pickle.dumps(out, protocol=2)


def cifar_archive(path, name, train_per_batch=4, test=6, seed=0):
  """Writes a synthetic CIFAR archive at `path` -> {<split>_images, <split>_labels (and
  <split>_coarse_labels)}: what the converter must give; and 'class_names'."""
  rng = np.random.default_rng(seed)
  ten = name == 'cifar10'
  classes, root = (10, 'cifar-10-batches-py') if ten else (100, 'cifar-100-python')
  batches = (
    [f'data_batch_{i}' for i in range(1, 6)] if ten else ['train']
  )  # five batches, or one file
  per_file = train_per_batch if ten else 5 * train_per_batch
  expected = {}
  with tarfile.open(path, 'w:gz') as tar:
    for split, files, n in (
      ('train', batches, per_file),
      ('test', ['test_batch' if ten else 'test'], test),
    ):
      images, labels, coarse = [], [], []
      for member in files:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, classes, n)
        c = y // 5  # CIFAR-100: 20 superclasses
        fields = dict(labels=y) if ten else dict(fine_labels=y, coarse_labels=c)
        _add(tar, f'{root}/{member}', _batch(x, **fields))
        images.append(x), labels.append(y), coarse.append(c)
      expected[f'{split}_images'] = np.concatenate(images)
      expected[f'{split}_labels'] = np.concatenate(labels)
      if not ten:
        expected[f'{split}_coarse_labels'] = np.concatenate(coarse)
    names = [f'class_{i}'.encode() for i in range(classes)]
    if ten:
      meta = {b'label_names': names, b'num_cases_per_batch': per_file, b'num_vis': 3072}
      _add(tar, f'{root}/batches.meta', pickle.dumps(meta, protocol=2))
      _add(tar, f'{root}/readme.html', b'<html></html>')
    else:
      coarse_names = [f'super_{i}'.encode() for i in range(20)]
      meta = {b'fine_label_names': names, b'coarse_label_names': coarse_names}
      _add(tar, f'{root}/meta', pickle.dumps(meta, protocol=2))
  expected['class_names'] = [n.decode() for n in names]
  return expected


def tiny_imagenet_archive(path, wnids=('n01443537', 'n01629819', 'n01641577'), per_class=11):
  """Writes a synthetic tiny-imagenet-200.zip (PNG bytes under .JPEG names would be wrong:
  these are real JPEGs, one greyscale) -> the expected arrays, decoded as the loader must."""
  from PIL import Image

  rng = np.random.default_rng(1)
  root = 'tiny-imagenet-200'
  expected = {'train_images': [], 'train_labels': [], 'test_images': [], 'test_labels': []}

  def jpeg(grey=False):
    x = rng.integers(0, 256, (64, 64) if grey else (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format='JPEG')
    blob = buf.getvalue()
    with Image.open(io.BytesIO(blob)) as im:
      return blob, np.asarray(im.convert('RGB'))

  with zipfile.ZipFile(path, 'w') as z:
    z.writestr(f'{root}/wnids.txt', ''.join(f'{w}\n' for w in reversed(wnids)))
    z.writestr(f'{root}/words.txt', ''.join(f'{w}\tthing {w}, other\n' for w in wnids))
    order = list(reversed(wnids))  # label = line of wnids.txt
    for label, w in enumerate(order):
      boxes = []
      for i in range(per_class):  # written in text order: _0, _1, _10, _2, ...
        blob, x = jpeg(grey=(label == 0 and i == 3))
        z.writestr(f'{root}/train/{w}/images/{w}_{i}.JPEG', blob)
        boxes.append(f'{w}_{i}.JPEG\t0\t0\t63\t63')
        expected['train_images'].append(x), expected['train_labels'].append(label)
      z.writestr(f'{root}/train/{w}/{w}_boxes.txt', '\n'.join(boxes) + '\n')
    lines = []
    for i, label in enumerate([2, 0, 1, 1]):
      blob, x = jpeg()
      z.writestr(f'{root}/val/images/val_{i}.JPEG', blob)
      lines.append(f'val_{i}.JPEG\t{order[label]}\t1\t2\t50\t60')
      expected['test_images'].append(x), expected['test_labels'].append(label)
    z.writestr(f'{root}/val/val_annotations.txt', '\n'.join(lines) + '\n')
    z.writestr(f'{root}/test/images/test_0.JPEG', jpeg()[0])
  out = {k: np.stack(v) if 'images' in k else np.asarray(v) for k, v in expected.items()}
  out['class_names'] = [f'thing {w}, other' for w in order]
  return out


def md5_and_size(path):
  with open(path, 'rb') as f:
    blob = f.read()
  return hashlib.md5(blob).hexdigest(), len(blob)


class ArchiveServer:
  """Serves {url path: file path} on 127.0.0.1 (a free port) with range requests.

  `cut_next=N` makes the next response stop after N bytes and drop the connection (its
  Content-Length says the whole file). `requests` records (path, Range header) per request.
  """

  def __init__(self, files):
    self.files, self.cut_next, self.requests = dict(files), None, []
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def do_GET(self):
        server.requests.append((self.path, self.headers.get('Range')))
        if self.path not in server.files:
          self.send_error(404, 'Not Found')
          return
        with open(server.files[self.path], 'rb') as f:
          blob = f.read()
        start, status = 0, 200
        if self.headers.get('Range'):
          start = int(self.headers['Range'].split('=')[1].split('-')[0])
          if start >= len(blob):
            self.send_error(416, 'Range Not Satisfiable')
            return
          status = 206
        body = blob[start:]
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        if status == 206:
          self.send_header('Content-Range', f'bytes {start}-{len(blob) - 1}/{len(blob)}')
        self.end_headers()
        if server.cut_next is not None:
          body, server.cut_next = body[: server.cut_next], None
          self.wfile.write(body)
          self.wfile.flush()
          self.close_connection = True
          self.connection.shutdown(2)
          return
        self.wfile.write(body)

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()


def serve_as(source, server, path):
  """A copy of datasets.Source `source` published at `server` with `path`'s MD5 and size."""
  import dataclasses

  digest, size = md5_and_size(path)
  return dataclasses.replace(
    source, url=f'{server.url}/{os.path.basename(source.url)}', md5=digest, size=size
  )
