"""The Datasets page's parts: the dataset picker (every source, confined to the allowed folders) and the views
of a scanned dataset (summary, balance, samples, sizes, unreadable files, 2-D map)."""
