"""Any method on scikit-learn's digits (embedded, no download): the quickstart at any method.

python train.py --config=configs/digits.py:trs --workdir=/tmp/trs_digits
Variants as configs/cifar10.py; adversarial training here uses eps 0.1 (pixels in [0, 1],
8x8 images), 7 PGD steps of 0.025, on half of each batch (measured at width 4, 15 epochs:
FGSM accuracy at eps 0.1 91.4% with half, 89.7% with whole batches, 84.1% without),
e.g. --config=configs/digits.py:lpd,advt_fgsm.
"""

from configs import _variants as variants
from configs import quickstart


def get_config(spec='lpd'):
  config = quickstart.get_config()
  config.adv_train.eps = 0.1
  config.adv_train.step_size = 0.025
  config.adv_train.mix = 0.5
  return variants.apply(config, spec)
