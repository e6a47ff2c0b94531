"""Train, evaluate and log one experiment: `python train.py loss=focal optim=adam`.

A thin entry point; everything lives in `losslab` (configs in src/losslab/conf, linked as conf/).
"""

from losslab.startup import begin

begin()  # no garbage collection while starting up, no unused imports (losslab.startup)

from losslab.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
