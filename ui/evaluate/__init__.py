"""Drawing the Evaluate page: the run picker and its empty states (``loading``), the score cards and the
leakage-honest score (``scores``), the clickable confusion matrix (``confusion``), the classes table and the most
confused pairs (``classes``), the most confidently wrong images with heat maps, calibration and the report
(``mistakes``)."""
