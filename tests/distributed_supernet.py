"""Train a small supernet for `tests/test_oneshot.py`: under torchrun (two gloo ranks)
or alone with the same global batch; the lead writes the bank to argv[1]."""

import sys

import torch
from nasdsl.runtime.data import Dataset, Split
from nasdsl.runtime.oneshot import end_follower, ranks_from_environment, train_supernet
from nasdsl.runtime.train import TrainConfig

import nasdsl
from nasdsl.compiler.supernet import Supernet

# no batch norm: each rank normalises with its own share of the batch, which no single
# process with the global batch can match (see docs/supernets.md)
SPACE = """space plain(num_classes: int = 4, in_channels: int = 1, resolution: int = 8)
network = conv(out=8, kernel=3) relu cell cell gap flatten linear(num_classes)
cell = conv(out={4, 8}, kernel={3, 5}) relu | sepconv(out=8) relu | maxpool(kernel=3)
"""


def main(out: str) -> None:
    torch.set_num_threads(1)
    space = nasdsl.loads(SPACE)
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))  # noqa: E731
    data = Dataset(name="random", train=split(70), val=split(16), test=split(16), num_classes=4,
                   input_shape=(1, 8, 8), note=None)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=1e-4)
    ranks = ranks_from_environment()
    net = Supernet(space, data.input_shape, seed=0)
    train_supernet(net, data, config, lambda rng: space.sample(rng=rng), seed=3, checkpoint=None, ranks=ranks,
                   device=torch.device("cpu"))
    if ranks.lead:
        torch.save(net.state_dict(), out)
    ranks.close()
    if not ranks.lead:
        end_follower()


if __name__ == "__main__":
    main(sys.argv[1])
