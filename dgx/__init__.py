"""dgx: domain-generalization sweeps for chest X-ray classifiers.

Implements and extends "The Importance of Background Information for OOD
Generalization" (ERM, ActDiff, RRR and GradMask with abnormality, scaled and
lung-periphery masks), with Optuna studies as the database of record.
"""

__version__ = "0.1.0"
