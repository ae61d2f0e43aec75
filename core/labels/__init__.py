"""Label issues: the images whose label is probably wrong, found by confident learning (Northcutt, Jiang and Chuang,
JAIR 2021) over out-of-sample predicted probabilities, made two ways: *quick* (a finished run's network as a feature
extractor, then K-fold logistic regression: ``quick``) and *thorough* (K-fold cross-training, each fold an ordinary
run: ``thorough``). ``probabilities`` holds what both make and how it is stored; ``confident`` finds the suspects.

May import: core.common, core.images, core.datasets, core.store, core.dedup, core.train.
"""
