"""Layout 'lpd_jax': what `python -m lpd_jax.export` writes (names mirror lpd-jax's flax
modules: `stem_conv`, `stem_bn`, `blocks.{b}.conv1` ... `blocks.{b}.shortcut_bn`, `head`),
all K members in one file under `members.{k}.` (k from 0); the exported `lpd_ensemble.py`
builds the PyTorch module with these names."""

from lpd_jax.torch_bridge.convert import BLOCK_LAYERS, Layout, by_prefix

LAYOUT = Layout(
  name='lpd_jax',
  source="lpd-jax's own export (python -m lpd_jax.export)",
  stem_conv='stem_conv',
  stem_bn='stem_bn',
  head='head',
  block='blocks.{b}',
  block_layers={name: name for name in BLOCK_LAYERS},
  split=by_prefix(r'members\.(\d+)\.', first=0),
  member_prefix='members.{k}.',
)
