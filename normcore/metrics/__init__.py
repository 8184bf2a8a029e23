"""Evaluation metrics for normative models: pure functions on arrays and frames."""

from normcore.metrics.calibration import (
                                          ace_against_truth,
                                          ace_from_centiles,
                                          ace_heldout,
                                          benjamini_hochberg,
                                          coverage,
                                          ks_by_age_band,
                                          pit_ks,
)
from normcore.metrics.classic import (
                                          explained_variance,
                                          gaussian_log_loss,
                                          msll,
                                          pearson_rho,
                                          point_mass_log_loss,
                                          smse,
                                          z_summary,
)
from normcore.metrics.clinical import auc_with_ci, cohen_d, separation_table, top_k_mean_abs, welch_t
from normcore.metrics.dependence import (
                                          dependence_report,
                                          energy_distance,
                                          frobenius_gap,
                                          mmd_rbf,
                                          product_of_marginals,
                                          spearman_matrix,
)
from normcore.metrics.memorisation import memorisation_report
from normcore.metrics.scoring_rules import sample_crps

__all__ = ["ace_against_truth", "ace_from_centiles", "ace_heldout", "benjamini_hochberg", "coverage",
           "ks_by_age_band", "pit_ks",
           "explained_variance", "gaussian_log_loss", "msll", "point_mass_log_loss", "pearson_rho", "smse", "z_summary",
           "auc_with_ci", "cohen_d",
           "separation_table", "top_k_mean_abs", "welch_t", "dependence_report", "energy_distance", "frobenius_gap",
           "mmd_rbf", "product_of_marginals", "spearman_matrix", "memorisation_report", "sample_crps"]
