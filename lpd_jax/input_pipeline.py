"""The training input path: batches cross to the devices as stored, become float there.

Host: `data.train_batches` gathers each batch in the seeded epoch order, as stored (CIFAR's
uint8 stays uint8: a quarter of float32's bytes); `prefetch` places the next batches on the
devices from a background thread while the current step runs. Device: the jitted training
step calls `device_batch`, which scales to float32 [0, 1] and, with `config.augment`, pads,
crops and flips each image from a key folded out of the step's key, so a resumed run sees
the same batches as an uninterrupted one and the method's own randomness (dropout masks,
PGD starts) keeps the step key it always had.
"""

import queue
import threading

import jax
import jax.numpy as jnp

from lpd_jax import data, sharding

__all__ = ['AUGMENT_STREAM', 'crop_and_flip', 'device_batch', 'draw_crops', 'prefetch']

# fold_in tag that derives the augmentation's key from the step's key ('aug!').
AUGMENT_STREAM = 0x61756721


def draw_crops(key, batch, pad):
  """-> (offsets int32 [B, 2] in [0, 2 pad]: (row, column) of each crop in the padded image,
  flip bool [B]: mirror left-right), the draws of `crop_and_flip`."""
  k_offsets, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_offsets, (batch, 2), 0, 2 * pad + 1)
  return offsets, jax.random.bernoulli(k_flip, 0.5, (batch,))


def crop_and_flip(key, images, pad=4):
  """Random `pad`-pixel zero-padded crops and horizontal flips (the CIFAR augmentation):
  images [B, H, W, c] (any dtype) -> the same shape and dtype, draws from `key`."""
  b, h, w, c = images.shape
  offsets, flip = draw_crops(key, b, pad)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crops = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(
    padded, offsets
  )
  return jnp.where(flip[:, None, None, None], crops[:, :, ::-1], crops)


def device_batch(x, step_key, augment):
  """Inside the jitted step: x [B, H, W, c] uint8 0..255 or float [0, 1] -> float32 [0, 1],
  cropped and flipped (`crop_and_flip`, key `fold_in(step_key, AUGMENT_STREAM)`) if
  `augment`."""
  if augment:
    x = crop_and_flip(jax.random.fold_in(step_key, AUGMENT_STREAM), x)
  return data.to_float(x)


_DONE = object()


def prefetch(batches, mesh=None, size=2):
  """Yields the (x, y) batches of `batches` already on the devices, `size` ahead.

  A daemon thread draws the next batches from the iterator and places them
  (`sharding.place_batch` over the mesh's 'data' axis, or `jax.device_put` on the default
  device) while the caller's step runs; an exception in the iterator is raised in the
  caller. Closing the generator early (a break, an interrupt) stops the thread.
  """
  ready = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item):
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def work():
    try:
      for batch in batches:
        placed = sharding.place_batch(batch, mesh) if mesh is not None else jax.device_put(batch)
        if not put(placed):
          return
      put(_DONE)
    except BaseException as e:  # handed to the consumer, raised there
      put(e)

  thread = threading.Thread(target=work, name='lpd_jax-prefetch', daemon=True)
  thread.start()
  try:
    while True:
      item = ready.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    thread.join(timeout=5)
