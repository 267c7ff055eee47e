"""Fine-tune (or train from scratch) a ViT for facial expression recognition.

This is ``python -m minivit.train``, minivit's training command (minivit/commands/train.py), run as a
script from a checkout. With no arguments it trains the embedded default: a short from-scratch run
on SYNTHETIC faces (drawn by minivit.data.synthetic_faces, not real data) that writes the full
report into runs/synthetic-<timestamp>/ in a few minutes on 2 CPU cores.

    python examples/finetune_fer.py                                   # the synthetic demo
    python examples/finetune_fer.py --data ../shared/data/fer2013     # FER2013 from scratch (the recipe for this machine)
    python examples/finetune_fer.py --data ../shared/data/fer2013 --weights ViT-B_16 --image-size 224
    python examples/finetune_fer.py --resume runs/fer2013-...         # continue an interrupted run
    python examples/finetune_fer.py --help                            # every option, its range, the profiles

The same from Python (the second command above): ``config_for`` applies the profile the command
applies (minivit/train/profiles.py) -- for a real dataset without weights "gpu" where CUDA is available
(S/4 on a conv stem, 8 blocks, 100 epochs, CutMix, ...) and "cpu" where it is not, "finetune" with them,
"synthetic" for the demo, which is TrainConfig's own defaults (``train(TrainConfig())`` is the first
command above):

    from minivit.train import config_for, train
    result = train(config_for("../shared/data/fer2013", out="runs/fer2013"))
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivit.common.cli import run  # noqa: E402
from minivit.commands.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
