"""Evaluation as features -> statistics -> score, one file per metric (torch-fidelity's shape).

    fid.py, kid.py     FD/FID and KID on a registered feature network (features.py: the FID
                       Inception of inception.py with the standard weights, or the offline
                       EfficientNet-Lite0 of efficientnet_lite.py)
    identity.py        cosine to the source, retrieval top-1 / top-5 against a gallery
    expression.py      L2 of expression vectors to the driver (or target)
    pose.py            L2 of (yaw, pitch, roll) to the target
    synth.py           judges' identity accuracy, expression factor error, background PSNR
    stats.py           mergeable per-pair score statistics (count, sums, fixed-bin histogram)
    protocol.py        the pairing protocol and the trivial baselines
    suite.py           every metric over a batch of pairs, merge, scores (what jobs/evaluate.py runs)
    report.py          metrics.json and a self-contained report.html

Every statistic merges exactly across batches and shards; nothing here imports Ray.
"""
