"""Hyperparameter sweeps with Ray Tune: a sweep file (``space``), each trial an ordinary training run
(``trial``), Tune's search and early stopping (``tuner``), what the sweep found (``results``), and the
command (``launch``)."""
