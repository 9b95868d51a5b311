"""LPD ensemble of K = 3 narrow ResNet-18s on scikit-learn's digits: no download, CPU minutes.

python train.py --config=configs/quickstart.py --workdir=/tmp/lpd_quickstart
python eval.py --workdir=/tmp/lpd_quickstart
"""

from lpd_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset = 'digits'
  config.num_members = 3
  config.width = 8
  config.method = 'lpd'
  config.num_epochs = 15
  config.batch_size = 64
  config.learning_rate = 0.05
  config.log_every_steps = 10
  return config
