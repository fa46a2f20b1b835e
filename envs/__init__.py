"""Gymnasium environments over MuJoCo (H1 motion tracking at 100 Hz), rewards as named terms.

Populated by the low-level policy issue; ``motiontok`` never imports this package.
"""
