"""Layout 'kuangliu': the CIFAR ResNet-18/34 of kuangliu/pytorch-cifar (`models/resnet.py`):
`conv1`, `bn1`, `layer{1..4}.{i}.conv1` / `bn1` / `conv2` / `bn2` / `shortcut.0` (1x1 conv) /
`shortcut.1` (its BatchNorm), `linear`; one member per file (its `main.py` saves
`{'net': state_dict}`, keys prefixed `module.` when trained under DataParallel: both are
unwrapped by `files.read_state_dict`).

Its stem (3x3 conv, stride 1, padding 1, no bias, BatchNorm, ReLU, no max-pool), blocks and
BatchNorm defaults (eps 1e-5, momentum 0.1) are lpd-jax's; its pooling is
`F.avg_pool2d(out, 4)`, which is the global average lpd-jax takes only where the last stage
is 4x4: 32x32 inputs. Its `main.py` normalises inputs with CIFAR-10's mean and std; lpd-jax
feeds pixels in [0, 1], so such a checkpoint sees other inputs than it was trained on."""

from lpd_jax.torch_bridge.convert import Layout, one_member

LAYOUT = Layout(
  name='kuangliu',
  source='kuangliu/pytorch-cifar models/resnet.py',
  stem_conv='conv1',
  stem_bn='bn1',
  head='linear',
  block='layer{s1}.{i}',
  block_layers=dict(
    conv1='conv1',
    bn1='bn1',
    conv2='conv2',
    bn2='bn2',
    shortcut_conv='shortcut.0',
    shortcut_bn='shortcut.1',
  ),
  split=one_member,
  input_size=32,
  notes=(
    "avg_pool2d(out, 4) is lpd-jax's global average pooling on 32x32 inputs only; its "
    'main.py normalises inputs (CIFAR-10 mean and std), lpd-jax feeds [0, 1] pixels'
  ),
)
