"""Facts about SageMaker's built-in XGBoost algorithm (names, metrics) shared by the runner and emulator."""

from __future__ import annotations


def names(text: str) -> frozenset[str]:
    """A set of names written as one whitespace-separated string (easier to compare with the source)."""
    return frozenset(text.split())


# sagemaker-xgboost-container algorithm_mode/hyperparameter_validation.py: every accepted name.
HYPERPARAMETERS = names(
    """num_round csv_weights early_stopping_rounds booster verbosity nthread eta gamma max_depth
    min_child_weight max_delta_step subsample colsample_bytree colsample_bylevel colsample_bynode lambda
    alpha tree_method sketch_eps scale_pos_weight updater dsplit refresh_leaf process_type grow_policy
    max_leaves max_bin predictor monotone_constraints interaction_constraints sample_type normalize_type
    rate_drop one_drop skip_drop lambda_bias tweedie_variance_power objective num_class base_score _kfold
    _num_cv_round _tuning_objective_metric eval_metric seed num_parallel_tree save_model_on_termination
    aft_loss_distribution aft_loss_distribution_scale deterministic_histogram sampling_method
    prob_buffer_row use_dask_gpu_training"""
)
INT_HPS = names(
    """num_round csv_weights early_stopping_rounds verbosity nthread max_depth max_delta_step refresh_leaf
    max_leaves max_bin num_class seed num_parallel_tree one_drop _kfold _num_cv_round
    deterministic_histogram prob_buffer_row"""
)
FLOAT_HPS = names(
    """eta gamma min_child_weight subsample colsample_bytree colsample_bylevel colsample_bynode lambda alpha
    sketch_eps scale_pos_weight rate_drop skip_drop lambda_bias tweedie_variance_power base_score
    aft_loss_distribution_scale"""
)
# Names the emulator accepts but does not pass to xgboost.train (container-level switches).
CONTAINER_ONLY = names(
    """num_round csv_weights early_stopping_rounds _kfold _num_cv_round _tuning_objective_metric
    save_model_on_termination use_dask_gpu_training prob_buffer_row"""
)
# algorithm_mode/metrics.py: direction of each metric the container publishes.
MAXIMIZE = names(
    """accuracy auc aucpr balanced_accuracy f1 f1_binary f1_macro map ndcg precision r2 recall
    precision_macro precision_micro recall_macro recall_micro"""
)
MINIMIZE = names(
    """aft-nloglik cox-nloglik error gamma-deviance gamma-nloglik interval-regression-accuracy logloss mae
    mape merror mlogloss mphe mse poisson-nloglik rmse rmsle tweedie-nloglik"""
)


def metric_definitions() -> list[dict[str, str]]:
    """The MetricDefinitions SageMaker attaches to a built-in XGBoost job (validation:* and train:*)."""
    defs = []
    for channel in ("validation", "train"):
        for metric in sorted(MAXIMIZE | MINIMIZE):
            defs.append(
                {"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:(\S+)"}
            )
    return defs
