"""Train, evaluate and log one experiment: `python train.py loss=focal optim=adam`.

A thin entry point; everything lives in `losslab` (configs in src/losslab/conf, linked as conf/).
"""

from losslab.cli import main

if __name__ == "__main__":
    main()
