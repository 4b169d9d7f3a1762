"""Training of the enhancer with the paper's single-step recipe (``simharmon train``).

Usage::

    simharmon curate --procedural 2000 --procedural-size 352x208 --recipe isp,poisson,artifacts \\
        --temporal 1 --temporal-frames 5 --out data/curated-default
    simharmon train --config configs/train-default.yaml [--vgg-weights vgg16.pth] [--steps N]
    torchrun --nproc_per_node=8 -m simharmon train --config configs/train-default.yaml

Modules: ``config`` (TrainConfig), ``data`` (manifest pairs and sequences), ``losses`` (L2, VGG
patch perceptual, temporal warping), ``trainer`` (loop, EMA, checkpoints, export),
``distributed`` (torchrun / DDP), ``cli``.
"""
